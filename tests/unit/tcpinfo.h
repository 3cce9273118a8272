#ifndef BM_T_TCPINFO_H
#define BM_T_TCPINFO_H
/* Segments with data this socket has received (tcpi_data_segs_in); -1 on error. */
long t_data_segs_in(int fd);
#endif
