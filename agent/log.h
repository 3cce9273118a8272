/* meshd logging: one line per event to stderr, with a timestamp. */
#ifndef BM_LOG_H
#define BM_LOG_H
void bm_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#endif
