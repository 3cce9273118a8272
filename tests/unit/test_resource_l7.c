/* The L7 fields of VirtualService HTTPRoute and DestinationRule
 * (istio-api §1.3-1.9, §1.11, §2.4, §2.5): the canonical JSON they produce
 * (Istio's camelCase names, schema order) and one failing case per rule,
 * asserting the exact "file:line: field.path: message" users see. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "resource.h"
#include "unit.h"

#define VS "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: r\nspec:\n"
#define DR "apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata:\n  name: r\nspec:\n"
/* Lines 6 and 7; the first rule starts on line 8. */
#define HTTP "  hosts: [a]\n  http:\n"
/* A rule with a route on line 8; further fields of the rule from line 9. */
#define R VS HTTP "  - route: [{destination: {host: a}}]\n"
/* A trafficPolicy whose first field is on line 8. */
#define TP DR "  host: a\n  trafficPolicy:\n"

static int parse(const char *yaml, json_t **out, struct bm_errlist *errs)
{
	return bm_resources_parse(yaml, strlen(yaml), "t.yaml", 0, out, errs);
}

/* Documents that must parse, and the canonical spec they must produce. */
static const struct good_case {
	const char *yaml;
	const char *spec;
} good_cases[] = {
	/* Every HTTPMatchRequest field; presence matches in headers. */
	{ VS HTTP "  - name: r1\n    match:\n"
	  "    - name: m1\n      uri: {prefix: /api}\n      scheme: {exact: https}\n"
	  "      method: {regex: 'GET|HEAD'}\n      authority: {exact: a.example.com}\n"
	  "      headers:\n        x-a: {exact: ''}\n        x-b: {}\n        x-c: {regex: '*'}\n"
	  "        x-d: {regex: '\\d+'}\n"
	  "      withoutHeaders: {x-debug: {}}\n"
	  "      queryParams: {v: {exact: '2'}, q: {prefix: a}}\n"
	  "      ignoreUriCase: true\n      port: 8080\n      sourceLabels: {app: web}\n"
	  "      sourceNamespace: prod\n      gateways: [mesh]\n      statPrefix: s\n"
	  "    - uri: {exact: /x}\n"
	  "    route: [{destination: {host: a}}]\n",
	  "{\"hosts\":[\"a\"],\"http\":[{\"name\":\"r1\",\"match\":[{\"name\":\"m1\",\"uri\":"
	  "{\"prefix\":\"/api\"},\"scheme\":{\"exact\":\"https\"},\"method\":{\"regex\":"
	  "\"GET|HEAD\"},\"authority\":{\"exact\":\"a.example.com\"},\"headers\":{\"x-a\":"
	  "{\"exact\":\"\"},\"x-b\":{},\"x-c\":{\"regex\":\"*\"},\"x-d\":{\"regex\":\"\\\\d+\"}},"
	  "\"port\":8080,\"sourceLabels\":{\"app\":\"web\"},\"gateways\":[\"mesh\"],"
	  "\"queryParams\":{\"v\":{\"exact\":\"2\"},\"q\":{\"prefix\":\"a\"}},\"ignoreUriCase\":"
	  "true,\"withoutHeaders\":{\"x-debug\":{}},\"sourceNamespace\":\"prod\","
	  "\"statPrefix\":\"s\"},{\"uri\":{\"exact\":\"/x\"}}],\"route\":[{\"destination\":"
	  "{\"host\":\"a\"}}]}]}" },
	/* route + rewrite + timeout + retries + fault + mirror + headers. */
	{ VS HTTP "  - route:\n    - destination: {host: a, subset: v1}\n      weight: 90\n"
	  "      headers: {request: {set: {x-v: '1'}}, response: {remove: [x-internal]}}\n"
	  "    - destination: {host: a, subset: v2}\n      weight: 10\n"
	  "    rewrite: {uri: /v2, authority: b.example.com}\n"
	  "    timeout: 3s\n"
	  "    retries: {attempts: 2, perTryTimeout: 500ms, retryOn: 'gateway-error, 503,"
	  "cancelled', retryRemoteLocalities: true, retryIgnorePreviousHosts: false, "
	  "backoff: 25ms}\n"
	  "    fault:\n      delay: {fixedDelay: 1s, percentage: {value: 0.5}, percent: 1}\n"
	  "      abort: {grpcStatus: UNAVAILABLE, percentage: {value: 100}}\n"
	  "    mirror: {host: shadow, port: {number: 80}}\n"
	  "    mirrorPercentage: {value: 0}\n"
	  "    headers:\n      request: {set: {x-env: prod}, add: {X-Trace: 'on'}, remove: [x-b]}\n"
	  "      response: {add: {cache-control: no-store}}\n",
	  "{\"hosts\":[\"a\"],\"http\":[{\"route\":[{\"destination\":{\"host\":\"a\",\"subset\":"
	  "\"v1\"},\"weight\":90,\"headers\":{\"request\":{\"set\":{\"x-v\":\"1\"}},\"response\":"
	  "{\"remove\":[\"x-internal\"]}}},{\"destination\":{\"host\":\"a\",\"subset\":\"v2\"},"
	  "\"weight\":10}],\"rewrite\":{\"uri\":\"/v2\",\"authority\":\"b.example.com\"},"
	  "\"timeout\":\"3s\",\"retries\":{\"attempts\":2,\"perTryTimeout\":\"500ms\","
	  "\"retryOn\":\"gateway-error, 503,cancelled\",\"retryRemoteLocalities\":true,"
	  "\"retryIgnorePreviousHosts\":false,\"backoff\":\"25ms\"},\"fault\":{\"delay\":"
	  "{\"fixedDelay\":\"1s\",\"percentage\":{\"value\":0.5},\"percent\":1},\"abort\":"
	  "{\"grpcStatus\":\"UNAVAILABLE\",\"percentage\":{\"value\":100}}},\"mirror\":{\"host\":"
	  "\"shadow\",\"port\":{\"number\":80}},\"mirrorPercentage\":{\"value\":0},\"headers\":"
	  "{\"request\":{\"set\":{\"x-env\":\"prod\"},\"add\":{\"X-Trace\":\"on\"},\"remove\":"
	  "[\"x-b\"]},\"response\":{\"add\":{\"cache-control\":\"no-store\"}}}}]}" },
	/* redirect alone, with every field. */
	{ VS HTTP "  - match: [{uri: {prefix: /old}}]\n"
	  "    redirect: {uri: /new, authority: b, derivePort: FROM_REQUEST_PORT, scheme: https, "
	  "redirectCode: 308}\n",
	  "{\"hosts\":[\"a\"],\"http\":[{\"match\":[{\"uri\":{\"prefix\":\"/old\"}}],\"redirect\":"
	  "{\"uri\":\"/new\",\"authority\":\"b\",\"derivePort\":\"FROM_REQUEST_PORT\",\"scheme\":"
	  "\"https\",\"redirectCode\":308}}]}" },
	{ VS HTTP "  - redirect: {port: 8443}\n    headers: {response: {set: {x: y}}}\n", NULL },
	/* directResponse: string and base64 bodies, no body. */
	{ VS HTTP "  - directResponse: {status: 503, body: {string: 'down for maintenance'}}\n"
	  "  - directResponse: {status: 200, body: {bytes: 'eyJvayI6dHJ1ZX0='}}\n"
	  "  - directResponse: {status: 204}\n",
	  "{\"hosts\":[\"a\"],\"http\":[{\"directResponse\":{\"status\":503,\"body\":{\"string\":"
	  "\"down for maintenance\"}}},{\"directResponse\":{\"status\":200,\"body\":{\"bytes\":"
	  "\"eyJvayI6dHJ1ZX0=\"}}},{\"directResponse\":{\"status\":204}}]}" },
	/* mirrors with percentages; attempts 0 alone disables retries. */
	{ R "    mirrors:\n    - destination: {host: m1}\n      percentage: {value: 25.5}\n"
	  "    - destination: {host: m2, subset: v2}\n"
	  "    retries: {attempts: 0}\n",
	  "{\"hosts\":[\"a\"],\"http\":[{\"route\":[{\"destination\":{\"host\":\"a\"}}],"
	  "\"retries\":{\"attempts\":0},\"mirrors\":[{\"destination\":{\"host\":\"m1\"},"
	  "\"percentage\":{\"value\":25.5}},{\"destination\":{\"host\":\"m2\",\"subset\":"
	  "\"v2\"}}]}]}" },
	/* Setting :authority is an authority rewrite (without rewrite). */
	{ R "    headers: {request: {set: {':authority': c, Host: d}}}\n", NULL },
	/* fault with only an abort, only a delay. */
	{ R "    fault: {abort: {httpStatus: 503, percentage: {value: 0.0001}}}\n", NULL },
	{ R "    fault: {delay: {fixedDelay: 100ms}}\n", NULL },
	/* Every DestinationRule pool and outlier field; subsets share them. */
	{ TP "    connectionPool:\n"
	  "      tcp: {maxConnections: 10, connectTimeout: 250ms, idleTimeout: 0s}\n"
	  "      http: {http1MaxPendingRequests: 1, http2MaxRequests: 2, maxRequestsPerConnection: 3,"
	  " maxRetries: 4, idleTimeout: 30s, h2UpgradePolicy: DO_NOT_UPGRADE, useClientProtocol:"
	  " true, maxConcurrentStreams: 100}\n"
	  "    outlierDetection: {consecutive5xxErrors: 0, consecutiveGatewayErrors: 3,"
	  " consecutiveLocalOriginFailures: 2, splitExternalLocalOriginErrors: true, interval: 5s,"
	  " baseEjectionTime: 1m, maxEjectionPercent: 100, minHealthPercent: 20,"
	  " outlierDetectionHttpErrorCodes: [500, 503, 429]}\n"
	  "  subsets:\n  - name: v1\n    trafficPolicy:\n"
	  "      connectionPool: {http: {h2UpgradePolicy: UPGRADE}}\n"
	  "      outlierDetection: {consecutive5xxErrors: 4294967295}\n",
	  "{\"host\":\"a\",\"trafficPolicy\":{\"connectionPool\":{\"tcp\":{\"maxConnections\":10,"
	  "\"connectTimeout\":\"250ms\",\"idleTimeout\":\"0s\"},\"http\":{\"http1MaxPendingRequests\""
	  ":1,\"http2MaxRequests\":2,\"maxRequestsPerConnection\":3,\"maxRetries\":4,"
	  "\"idleTimeout\":\"30s\",\"h2UpgradePolicy\":\"DO_NOT_UPGRADE\",\"useClientProtocol\":"
	  "true,\"maxConcurrentStreams\":100}},\"outlierDetection\":{\"minHealthPercent\":20,"
	  "\"consecutive5xxErrors\":0,\"consecutiveGatewayErrors\":3,"
	  "\"consecutiveLocalOriginFailures\":2,\"splitExternalLocalOriginErrors\":true,"
	  "\"interval\":\"5s\",\"baseEjectionTime\":\"1m\",\"maxEjectionPercent\":100,"
	  "\"outlierDetectionHttpErrorCodes\":[500,503,429]}},\"subsets\":[{\"name\":\"v1\","
	  "\"trafficPolicy\":{\"connectionPool\":{\"http\":{\"h2UpgradePolicy\":\"UPGRADE\"}},"
	  "\"outlierDetection\":{\"consecutive5xxErrors\":4294967295}}}]}" },
	{ TP "    connectionPool: {tcp: {idleTimeout: 1h}}\n", NULL },
	/* consecutiveErrors becomes consecutiveGatewayErrors, in schema order. */
	{ TP "    outlierDetection: {interval: 1s, consecutiveErrors: 7, consecutive5xxErrors: 9}\n",
	  "{\"host\":\"a\",\"trafficPolicy\":{\"outlierDetection\":{\"consecutive5xxErrors\":9,"
	  "\"consecutiveGatewayErrors\":7,\"interval\":\"1s\"}}}" },
	{ TP "    outlierDetection: {consecutiveErrors: 7, consecutiveGatewayErrors: 2}\n",
	  "{\"host\":\"a\",\"trafficPolicy\":{\"outlierDetection\":"
	  "{\"consecutiveGatewayErrors\":2}}}" },
};

struct bad_case {
	const char *yaml;
	const char *want; /* "LINE: path: message" (prefix of the message) */
};

static const struct bad_case bad_cases[] = {
	/* match (§1.3) */
	{ R "    match:\n    - {}\n",
	  "10: spec.http[0].match[0]: an empty match is not allowed (leave out match to match "
	  "every request)" },
	{ R "    match: {uri: {exact: /}}\n", "9: spec.http[0].match: must be a list" },
	{ R "    match:\n    - uri: {exact: /a, prefix: /b}\n",
	  "10: spec.http[0].match[0].uri: only one of exact, prefix or regex is allowed" },
	{ R "    match:\n    - uri: {}\n",
	  "10: spec.http[0].match[0].uri: one of exact, prefix or regex is required" },
	{ R "    match:\n    - scheme: {}\n",
	  "10: spec.http[0].match[0].scheme: one of exact, prefix or regex is required" },
	{ R "    match:\n    - uri: {prefix: ''}\n",
	  "10: spec.http[0].match[0].uri.prefix: must not be empty" },
	{ R "    match:\n    - uri: {regex: ''}\n",
	  "10: spec.http[0].match[0].uri.regex: must not be empty" },
	{ R "    match:\n    - uri: {regex: '(a'}\n",
	  "10: spec.http[0].match[0].uri.regex: invalid regular expression \"(a\": missing "
	  "closing parenthesis" },
	{ R "    match:\n    - authority: {regex: '*'}\n",
	  "10: spec.http[0].match[0].authority.regex: invalid regular expression \"*\": "
	  "quantifier does not follow a repeatable item" },
	{ R "    match:\n    - method: {suffix: T}\n",
	  "10: spec.http[0].match[0].method.suffix: unknown field" },
	{ R "    match:\n    - method: GET\n",
	  "10: spec.http[0].match[0].method: must be an object" },
	{ R "    match:\n    - headers: {End-User: {exact: a}}\n",
	  "10: spec.http[0].match[0].headers.End-User: header name \"End-User\" must be lower case" },
	{ R "    match:\n    - headers: {'a b': {exact: a}}\n",
	  "10: spec.http[0].match[0].headers[\"a b\"]: \"a b\" is not a valid header name" },
	{ R "    match:\n    - headers: {x: ~}\n",
	  "10: spec.http[0].match[0].headers.x: must not be null" },
	{ R "    match:\n    - headers: {x: {regex: '+'}}\n",
	  "10: spec.http[0].match[0].headers.x.regex: invalid regular expression \"+\"" },
	{ R "    match:\n    - headers: {x: {exact: a, regex: b}}\n",
	  "10: spec.http[0].match[0].headers.x: only one of exact, prefix or regex is allowed" },
	{ R "    match:\n    - headers: {'@request.auth.claims.sub': {exact: a}}\n",
	  "10: spec.http[0].match[0].headers[\"@request.auth.claims.sub\"]: JWT claim matching "
	  "(@request.auth.claims) is not supported yet" },
	{ R "    match:\n    - withoutHeaders: {X-Debug: {}}\n",
	  "10: spec.http[0].match[0].withoutHeaders.X-Debug: header name \"X-Debug\" must be lower "
	  "case" },
	{ R "    match:\n    - queryParams: {'a=b': {exact: x}}\n",
	  "10: spec.http[0].match[0].queryParams[\"a=b\"]: \"a=b\" is not a valid query parameter "
	  "name" },
	{ R "    match:\n    - queryParams: {v: {prefix: ''}}\n",
	  "10: spec.http[0].match[0].queryParams.v.prefix: must not be empty" },
	{ R "    match:\n    - port: 0\n",
	  "10: spec.http[0].match[0].port: must be between 1 and 65535" },
	{ R "    match:\n    - gateways: [mesh, gw]\n",
	  "10: spec.http[0].match[0].gateways[1]: gateway \"gw\" is not supported yet (only "
	  "\"mesh\")" },
	{ R "    match:\n    - sourceNamespace: Prod\n",
	  "10: spec.http[0].match[0].sourceNamespace: \"Prod\" is not a valid DNS-1123 label" },
	{ R "    match:\n    - sourceLabels: {app: -x}\n",
	  "10: spec.http[0].match[0].sourceLabels.app: invalid label value" },
	{ R "    match:\n    - ignoreUriCase: 'yes'\n",
	  "10: spec.http[0].match[0].ignoreUriCase: must be a boolean (true or false)" },
	/* one of route/redirect/directResponse, and what excludes what (§1.11) */
	{ VS HTTP "  - timeout: 1s\n",
	  "8: spec.http[0]: one of route, redirect or directResponse is required" },
	{ R "    redirect: {uri: /b}\n", "9: spec.http[0].redirect: cannot be used with route" },
	{ VS HTTP "  - redirect: {uri: /b}\n    fault: {abort: {httpStatus: 500}}\n",
	  "8: spec.http[0].redirect: cannot be used with fault" },
	{ VS HTTP "  - redirect: {uri: /b}\n    rewrite: {uri: /c}\n",
	  "8: spec.http[0].redirect: cannot be used with rewrite" },
	{ R "    directResponse: {status: 503}\n",
	  "9: spec.http[0].directResponse: cannot be used with route" },
	{ VS HTTP "  - directResponse: {status: 503}\n    redirect: {uri: /a}\n",
	  "8: spec.http[0].directResponse: cannot be used with redirect" },
	{ VS HTTP "  - directResponse: {status: 503}\n    fault: {abort: {httpStatus: 500}}\n",
	  "8: spec.http[0].directResponse: cannot be used with fault" },
	{ VS HTTP "  - directResponse: {status: 503}\n    rewrite: {uri: /c}\n",
	  "8: spec.http[0].directResponse: cannot be used with rewrite" },
	{ R "    mirror: {host: b}\n    mirrors: [{destination: {host: c}}]\n",
	  "10: spec.http[0].mirrors: cannot be used with mirror" },
	/* rewrite */
	{ R "    rewrite: {}\n", "9: spec.http[0].rewrite: at least one of uri or authority is required" },
	{ R "    rewrite: {uriRegexRewrite: {match: a, rewrite: b}}\n",
	  "9: spec.http[0].rewrite.uriRegexRewrite: not supported yet" },
	{ R "    rewrite: {authority: b}\n    headers: {request: {set: {host: c}}}\n",
	  "9: spec.http[0].rewrite.authority: cannot be used with headers.request.set[\"host\"] "
	  "(the authority would be rewritten twice)" },
	/* redirect */
	{ VS HTTP "  - redirect: {}\n",
	  "8: spec.http[0].redirect: at least one of uri, authority, scheme, port or derivePort is "
	  "required" },
	{ VS HTTP "  - redirect: {uri: /a, redirectCode: 300}\n",
	  "8: spec.http[0].redirect.redirectCode: must be one of 301, 302, 303, 307, 308 (got 300)" },
	{ VS HTTP "  - redirect: {scheme: ftp}\n",
	  "8: spec.http[0].redirect.scheme: must be one of http, https (got \"ftp\")" },
	{ VS HTTP "  - redirect: {derivePort: FROM_NOWHERE}\n",
	  "8: spec.http[0].redirect.derivePort: must be one of FROM_PROTOCOL_DEFAULT, "
	  "FROM_REQUEST_PORT (got \"FROM_NOWHERE\")" },
	{ VS HTTP "  - redirect: {port: 80, derivePort: FROM_REQUEST_PORT}\n",
	  "8: spec.http[0].redirect.derivePort: cannot be used with port" },
	{ VS HTTP "  - redirect: {port: 70000}\n",
	  "8: spec.http[0].redirect.port: must be between 1 and 65535" },
	/* directResponse */
	{ VS HTTP "  - directResponse: {status: 199}\n",
	  "8: spec.http[0].directResponse.status: must be between 200 and 599" },
	{ VS HTTP "  - directResponse: {status: 600}\n",
	  "8: spec.http[0].directResponse.status: must be between 200 and 599" },
	{ VS HTTP "  - directResponse: {body: {string: a}}\n",
	  "8: spec.http[0].directResponse.status: required" },
	{ VS HTTP "  - directResponse: {status: 200, body: {string: a, bytes: YQ==}}\n",
	  "8: spec.http[0].directResponse.body: only one of string or bytes is allowed" },
	{ VS HTTP "  - directResponse: {status: 200, body: {bytes: 'not base64!'}}\n",
	  "8: spec.http[0].directResponse.body.bytes: must be base64 (standard alphabet, padded "
	  "with '=')" },
	{ VS HTTP "  - directResponse: {status: 200, body: {bytes: 'YQ='}}\n",
	  "8: spec.http[0].directResponse.body.bytes: must be base64" },
	{ VS HTTP "  - directResponse: {status: 200, body: {bytes: 'Y=Q='}}\n",
	  "8: spec.http[0].directResponse.body.bytes: must be base64" },
	/* timeout (§1.5) */
	{ R "    timeout: 1.5ms\n",
	  "9: spec.http[0].timeout: must be at least 1ms and a whole number of milliseconds" },
	{ R "    timeout: 0s\n", "9: spec.http[0].timeout: must be at least 1ms" },
	{ R "    timeout: 10\n", "9: spec.http[0].timeout: invalid duration \"10\"" },
	/* retries (§1.6) */
	{ R "    retries: {attempts: -1}\n", "9: spec.http[0].retries.attempts: must be >= 0" },
	{ R "    retries: {attempts: 0, perTryTimeout: 1s}\n",
	  "9: spec.http[0].retries.attempts: 0 disables retries; perTryTimeout must not be set "
	  "with it" },
	{ R "    retries: {attempts: 0, retryOn: 5xx}\n",
	  "9: spec.http[0].retries.attempts: 0 disables retries; retryOn must not be set with it" },
	{ R "    retries: {retryRemoteLocalities: true}\n",
	  "9: spec.http[0].retries.attempts: required when retryRemoteLocalities is set (left out "
	  "it is 0, which disables retries)" },
	{ R "    retries: {attempts: 3, retryOn: '5xx,bogus'}\n",
	  "9: spec.http[0].retries.retryOn: unknown retryOn policy \"bogus\" (want 5xx, " },
	{ R "    retries: {attempts: 3, retryOn: 'reset, Reset'}\n",
	  "9: spec.http[0].retries.retryOn: unknown retryOn policy \"Reset\"" },
	{ R "    retries: {attempts: 3, retryOn: '5xx,,reset'}\n",
	  "9: spec.http[0].retries.retryOn: empty retryOn policy (stray comma?)" },
	{ R "    retries: {attempts: 3, retryOn: '503,600'}\n",
	  "9: spec.http[0].retries.retryOn: \"600\" is not an HTTP status code (100-599)" },
	{ R "    retries: {attempts: 3, retryOn: '99'}\n",
	  "9: spec.http[0].retries.retryOn: \"99\" is not an HTTP status code (100-599)" },
	{ R "    retries: {attempts: 3, retryOn: '0503'}\n",
	  "9: spec.http[0].retries.retryOn: \"0503\" is not an HTTP status code (100-599)" },
	{ R "    retries: {attempts: 3, perTryTimeout: 0s}\n",
	  "9: spec.http[0].retries.perTryTimeout: must be at least 1ms" },
	{ R "    retries: {attempts: 3, backoff: 100us}\n",
	  "9: spec.http[0].retries.backoff: must be at least 1ms" },
	{ R "    retries: {attempts: 3, retryRemoteLocalities: 1}\n",
	  "9: spec.http[0].retries.retryRemoteLocalities: must be a boolean" },
	{ R "    retries: {attempts: 3, retryIgnorePreviousHosts: 'true'}\n",
	  "9: spec.http[0].retries.retryIgnorePreviousHosts: must be a boolean" },
	/* fault (§1.7) */
	{ R "    fault: {}\n", "9: spec.http[0].fault: at least one of delay or abort is required" },
	{ R "    fault: {delay: {percentage: {value: 10}}}\n",
	  "9: spec.http[0].fault.delay.fixedDelay: required" },
	{ R "    fault: {delay: {fixedDelay: 0s}}\n",
	  "9: spec.http[0].fault.delay.fixedDelay: must be at least 1ms" },
	{ R "    fault: {delay: {exponentialDelay: 1s}}\n",
	  "9: spec.http[0].fault.delay.exponentialDelay: not supported yet" },
	{ R "    fault: {delay: {fixedDelay: 1s, percentage: {value: 101}}}\n",
	  "9: spec.http[0].fault.delay.percentage.value: must be between 0 and 100" },
	{ R "    fault: {delay: {fixedDelay: 1s, percentage: {value: 0.00001}}}\n",
	  "9: spec.http[0].fault.delay.percentage.value: must be 0 or at least 0.0001" },
	{ R "    fault: {delay: {fixedDelay: 1s, percentage: {value: '50'}}}\n",
	  "9: spec.http[0].fault.delay.percentage.value: must be a number" },
	{ R "    fault: {delay: {fixedDelay: 1s, percent: 101}}\n",
	  "9: spec.http[0].fault.delay.percent: must be between 0 and 100" },
	{ R "    fault: {abort: {httpStatus: 600}}\n",
	  "9: spec.http[0].fault.abort.httpStatus: must be between 200 and 599" },
	{ R "    fault: {abort: {httpStatus: 199}}\n",
	  "9: spec.http[0].fault.abort.httpStatus: must be between 200 and 599" },
	{ R "    fault: {abort: {grpcStatus: unavailable}}\n",
	  "9: spec.http[0].fault.abort.grpcStatus: must be one of OK, CANCELLED, UNKNOWN" },
	{ R "    fault: {abort: {grpcStatus: '14'}}\n",
	  "9: spec.http[0].fault.abort.grpcStatus: must be one of OK" },
	{ R "    fault: {abort: {http2Error: REFUSED_STREAM}}\n",
	  "9: spec.http[0].fault.abort.http2Error: not supported yet" },
	{ R "    fault: {abort: {percentage: {value: 1}}}\n",
	  "9: spec.http[0].fault.abort: one of httpStatus or grpcStatus is required" },
	{ R "    fault: {abort: {httpStatus: 500, grpcStatus: UNAVAILABLE}}\n",
	  "9: spec.http[0].fault.abort.grpcStatus: cannot be used with httpStatus" },
	{ R "    fault: {abort: {httpStatus: 500, percentage: {value: -1}}}\n",
	  "9: spec.http[0].fault.abort.percentage.value: must be between 0 and 100" },
	/* mirror (§1.8) */
	{ R "    mirror: {subset: v2}\n", "9: spec.http[0].mirror.host: required" },
	{ R "    mirror: {host: '*'}\n", "9: spec.http[0].mirror.host: \"*\" alone is not allowed" },
	{ R "    mirrors: [{percentage: {value: 5}}]\n",
	  "9: spec.http[0].mirrors[0].destination: required" },
	{ R "    mirrors: [{destination: {host: c}, percentage: {value: -1}}]\n",
	  "9: spec.http[0].mirrors[0].percentage.value: must be between 0 and 100" },
	{ R "    mirror: {host: b}\n    mirrorPercentage: {value: 200}\n",
	  "10: spec.http[0].mirrorPercentage.value: must be between 0 and 100" },
	{ R "    mirror: {host: b}\n    mirrorPercent: 101\n",
	  "10: spec.http[0].mirrorPercent: must be between 0 and 100" },
	/* headers (§1.9) */
	{ R "    headers: {request: {set: {':path': /x}}}\n",
	  "9: spec.http[0].headers.request.set[\":path\"]: pseudo-header \":path\" cannot be changed" },
	{ R "    headers: {request: {add: {':authority': x}}}\n",
	  "9: spec.http[0].headers.request.add[\":authority\"]: pseudo-header \":authority\" cannot "
	  "be changed" },
	{ R "    headers: {response: {add: {'bad key': x}}}\n",
	  "9: spec.http[0].headers.response.add[\"bad key\"]: \"bad key\" is not a valid header name" },
	{ R "    headers: {request: {remove: [host]}}\n",
	  "9: spec.http[0].headers.request.remove[0]: header \"host\" cannot be removed" },
	{ R "    headers: {request: {remove: ['']}}\n",
	  "9: spec.http[0].headers.request.remove[0]: \"\" is not a valid header name" },
	{ R "    headers: {request: {set: {x: [a]}}}\n",
	  "9: spec.http[0].headers.request.set.x: must be a string" },
	{ R "    headers: {requests: {}}\n", "9: spec.http[0].headers.requests: unknown field" },
	{ VS HTTP "  - route:\n    - destination: {host: a}\n      headers: {response: {set: {'x y': z}}}\n",
	  "10: spec.http[0].route[0].headers.response.set[\"x y\"]: \"x y\" is not a valid header "
	  "name" },
	/* DestinationRule connectionPool (§2.4) */
	{ TP "    connectionPool: {http: {http1MaxPendingRequests: -1}}\n",
	  "8: spec.trafficPolicy.connectionPool.http.http1MaxPendingRequests: must be >= 0" },
	{ TP "    connectionPool: {http: {http2MaxRequests: 1.5}}\n",
	  "8: spec.trafficPolicy.connectionPool.http.http2MaxRequests: must be an integer (got \"1.5\")" },
	{ TP "    connectionPool: {http: {maxRequestsPerConnection: -1}}\n",
	  "8: spec.trafficPolicy.connectionPool.http.maxRequestsPerConnection: must be >= 0" },
	{ TP "    connectionPool: {http: {maxRetries: -1}}\n",
	  "8: spec.trafficPolicy.connectionPool.http.maxRetries: must be >= 0" },
	{ TP "    connectionPool: {http: {idleTimeout: 0s}}\n",
	  "8: spec.trafficPolicy.connectionPool.http.idleTimeout: must be at least 1ms" },
	{ TP "    connectionPool: {http: {h2UpgradePolicy: ALWAYS}}\n",
	  "8: spec.trafficPolicy.connectionPool.http.h2UpgradePolicy: must be one of DEFAULT, "
	  "DO_NOT_UPGRADE, UPGRADE (got \"ALWAYS\")" },
	{ TP "    connectionPool: {http: {useClientProtocol: true, h2UpgradePolicy: UPGRADE}}\n",
	  "8: spec.trafficPolicy.connectionPool.http.useClientProtocol: cannot be true with "
	  "h2UpgradePolicy UPGRADE" },
	{ TP "    connectionPool: {http: {useClientProtocol: 'true'}}\n",
	  "8: spec.trafficPolicy.connectionPool.http.useClientProtocol: must be a boolean" },
	{ TP "    connectionPool: {http: {maxConcurrentStreams: -1}}\n",
	  "8: spec.trafficPolicy.connectionPool.http.maxConcurrentStreams: must be >= 0" },
	{ TP "    connectionPool: {http: {http2KeepAlive: {interval: 1s, timeout: 1s}}}\n",
	  "8: spec.trafficPolicy.connectionPool.http.http2KeepAlive: not supported yet" },
	{ TP "    connectionPool: {tcp: {idleTimeout: 1.5ms}}\n",
	  "8: spec.trafficPolicy.connectionPool.tcp.idleTimeout: must be 0s (disabled) or at least "
	  "1ms and a whole number of milliseconds" },
	{ TP "    connectionPool: {tcp: {idleTimeout: forever}}\n",
	  "8: spec.trafficPolicy.connectionPool.tcp.idleTimeout: invalid duration \"forever\"" },
	{ TP "    connectionPool: {tcp: {connectTimeout: 1.0001s}}\n",
	  "8: spec.trafficPolicy.connectionPool.tcp.connectTimeout: must be at least 1ms and a "
	  "whole number of milliseconds" },
	{ TP "    connectionPool: {tcp: {tcpKeepalive: {time: 1s}}}\n",
	  "8: spec.trafficPolicy.connectionPool.tcp.tcpKeepalive: not supported yet" },
	/* outlierDetection (§2.5) */
	{ TP "    outlierDetection: {consecutiveGatewayErrors: -1}\n",
	  "8: spec.trafficPolicy.outlierDetection.consecutiveGatewayErrors: must be >= 0" },
	{ TP "    outlierDetection: {consecutiveErrors: -1}\n",
	  "8: spec.trafficPolicy.outlierDetection.consecutiveErrors: must be >= 0" },
	{ TP "    outlierDetection: {consecutive5xxErrors: 4294967296}\n",
	  "8: spec.trafficPolicy.outlierDetection.consecutive5xxErrors: integer out of range" },
	{ TP "    outlierDetection: {consecutiveLocalOriginFailures: 3}\n",
	  "8: spec.trafficPolicy.outlierDetection.consecutiveLocalOriginFailures: requires "
	  "splitExternalLocalOriginErrors: true" },
	{ TP "    outlierDetection:\n      splitExternalLocalOriginErrors: false\n"
	  "      consecutiveLocalOriginFailures: 3\n",
	  "10: spec.trafficPolicy.outlierDetection.consecutiveLocalOriginFailures: requires "
	  "splitExternalLocalOriginErrors: true" },
	{ TP "    outlierDetection: {splitExternalLocalOriginErrors: 1}\n",
	  "8: spec.trafficPolicy.outlierDetection.splitExternalLocalOriginErrors: must be a boolean" },
	{ TP "    outlierDetection: {interval: 0s}\n",
	  "8: spec.trafficPolicy.outlierDetection.interval: must be at least 1ms" },
	{ TP "    outlierDetection: {baseEjectionTime: 1.0005s}\n",
	  "8: spec.trafficPolicy.outlierDetection.baseEjectionTime: must be at least 1ms and a "
	  "whole number of milliseconds" },
	{ TP "    outlierDetection: {maxEjectionPercent: 101}\n",
	  "8: spec.trafficPolicy.outlierDetection.maxEjectionPercent: must be between 0 and 100" },
	{ TP "    outlierDetection: {outlierDetectionHttpErrorCodes: [500, 600]}\n",
	  "8: spec.trafficPolicy.outlierDetection.outlierDetectionHttpErrorCodes[1]: must be "
	  "between 100 and 599" },
	{ TP "    outlierDetection: {outlierDetectionHttpErrorCodes: 500}\n",
	  "8: spec.trafficPolicy.outlierDetection.outlierDetectionHttpErrorCodes: must be a list" },
	/* The same tables inside a subset's trafficPolicy. */
	{ DR "  host: a\n  subsets:\n  - name: v1\n    trafficPolicy:\n"
	  "      outlierDetection: {maxEjectionPercent: 150}\n",
	  "10: spec.subsets[0].trafficPolicy.outlierDetection.maxEjectionPercent: must be between "
	  "0 and 100" },
	{ DR "  host: a\n  subsets:\n  - name: v1\n    trafficPolicy:\n"
	  "      connectionPool: {http: {useClientProtocol: true, h2UpgradePolicy: UPGRADE}}\n",
	  "10: spec.subsets[0].trafficPolicy.connectionPool.http.useClientProtocol: cannot be true "
	  "with h2UpgradePolicy UPGRADE" },
	{ DR "  host: a\n  subsets:\n  - name: v1\n    trafficPolicy:\n"
	  "      outlierDetection: {consecutiveLocalOriginFailures: 1}\n",
	  "10: spec.subsets[0].trafficPolicy.outlierDetection.consecutiveLocalOriginFailures: "
	  "requires splitExternalLocalOriginErrors: true" },
};

static void check_bad(const char *yaml, const char *want)
{
	struct bm_errlist errs = { 0 };
	json_t *out = NULL;
	char prefix[512];
	int r = parse(yaml, &out, &errs);
	bool found = false;

	snprintf(prefix, sizeof(prefix), "t.yaml:%s", want);
	for (size_t i = 0; i < errs.n; i++)
		if (!strncmp(errs.msg[i], prefix, strlen(prefix)))
			found = true;
	if (!found || r != -EINVAL || out) {
		fprintf(stderr, "\nwanted \"%s\" (r=%d) for:\n%s--- got:\n", prefix, r, yaml);
		bm_errlist_print(&errs, stderr);
	}
	CU_ASSERT_EQUAL(r, -EINVAL);
	CU_ASSERT_PTR_NULL(out);
	CU_ASSERT(found);
	json_decref(out);
	bm_errlist_free(&errs);
}

static void test_l7_good(void)
{
	for (size_t i = 0; i < sizeof(good_cases) / sizeof(good_cases[0]); i++) {
		struct bm_errlist errs = { 0 };
		json_t *out = NULL;
		int r = parse(good_cases[i].yaml, &out, &errs);

		if (r) {
			fprintf(stderr, "\nunexpected errors for:\n%s", good_cases[i].yaml);
			bm_errlist_print(&errs, stderr);
		}
		CU_ASSERT_EQUAL(r, 0);
		CU_ASSERT_EQUAL(json_array_size(out), 1);
		if (!r && good_cases[i].spec) {
			char *s = json_dumps(json_object_get(json_array_get(out, 0), "spec"),
					     JSON_COMPACT);

			if (!s || strcmp(s, good_cases[i].spec))
				fprintf(stderr, "\nspec of:\n%swant %s\ngot  %s\n", good_cases[i].yaml,
					good_cases[i].spec, s ? s : "(null)");
			CU_ASSERT_PTR_NOT_NULL(s);
			if (s)
				CU_ASSERT_STRING_EQUAL(s, good_cases[i].spec);
			free(s);
		}
		json_decref(out);
		bm_errlist_free(&errs);
	}
}

static void test_l7_rules(void)
{
	for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++)
		check_bad(bad_cases[i].yaml, bad_cases[i].want);
}

/* Each accepted retryOn token (Istio's supportedRetryOnPolicies) alone. */
static void test_retry_on_tokens(void)
{
	static const char *const tokens[] = {
		"5xx", "gateway-error", "reset", "reset-before-request", "connect-failure",
		"refused-stream", "retriable-4xx", "retriable-status-codes", "retriable-headers",
		"envoy-ratelimited", "http3-post-connect-failure", "cancelled",
		"deadline-exceeded", "internal", "resource-exhausted", "unavailable", "100", "599",
		" 503 , 504 ",
	};

	for (size_t i = 0; i < sizeof(tokens) / sizeof(tokens[0]); i++) {
		char yaml[512];
		struct bm_errlist errs = { 0 };
		json_t *out = NULL;
		int r;

		snprintf(yaml, sizeof(yaml), R "    retries: {attempts: 1, retryOn: '%s'}\n",
			 tokens[i]);
		r = parse(yaml, &out, &errs);
		if (r)
			bm_errlist_print(&errs, stderr);
		CU_ASSERT_EQUAL(r, 0);
		json_decref(out);
		bm_errlist_free(&errs);
	}
}

/* Warnings leave the resource accepted and are kept apart from errors. */
static void test_l7_warnings(void)
{
	static const struct {
		const char *yaml;
		const char *warn;
	} cases[] = {
		{ TP "    outlierDetection:\n      consecutiveErrors: 5\n",
		  "t.yaml:9: spec.trafficPolicy.outlierDetection.consecutiveErrors: warning: "
		  "deprecated; mapped to consecutiveGatewayErrors (use consecutiveGatewayErrors or "
		  "consecutive5xxErrors)" },
		{ TP "    outlierDetection: {consecutiveErrors: 5, consecutiveGatewayErrors: 1}\n",
		  "t.yaml:8: spec.trafficPolicy.outlierDetection.consecutiveErrors: warning: "
		  "deprecated and ignored: consecutiveGatewayErrors is set" },
		{ R "    mirror: {host: b}\n    mirrorPercent: 50\n",
		  "t.yaml:10: spec.http[0].mirrorPercent: warning: mirrorPercent is deprecated; use "
		  "mirrorPercentage" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct bm_errlist errs = { 0 };
		json_t *out = NULL;

		CU_ASSERT_EQUAL(parse(cases[i].yaml, &out, &errs), 0);
		CU_ASSERT_EQUAL(bm_errlist_count(&errs), 0);
		CU_ASSERT_EQUAL(errs.nwarn, 1);
		if (errs.nwarn)
			CU_ASSERT_STRING_EQUAL(errs.warn[0], cases[i].warn);
		json_decref(out);
		bm_errlist_free(&errs);
	}
}

/* A warning travels with the errors of the same input and is printed after
 * them; an error keeps the resource refused. */
static void test_warning_with_errors(void)
{
	const char *yaml = TP "    outlierDetection: {consecutiveErrors: 5, interval: 0s}\n"
			      "---\n" TP "    outlierDetection: {consecutiveErrors: 5}\n";
	struct bm_errlist errs = { 0 }, all = { 0 };
	json_t *out = NULL;
	char *buf = NULL;
	size_t len = 0;
	FILE *f;

	CU_ASSERT_EQUAL(parse(yaml, &out, &errs), -EINVAL);
	CU_ASSERT_EQUAL(errs.n, 1);
	CU_ASSERT_EQUAL(errs.nwarn, 1);
	CU_ASSERT_EQUAL(bm_errlist_splice(&all, &errs), 0);
	CU_ASSERT_EQUAL(all.n, 1);
	CU_ASSERT_EQUAL(all.nwarn, 1);
	CU_ASSERT_EQUAL(errs.nwarn, 0);
	f = open_memstream(&buf, &len);
	CU_ASSERT_PTR_NOT_NULL_FATAL(f);
	bm_errlist_print(&all, f);
	fclose(f);
	CU_ASSERT_STRING_EQUAL(buf,
		"t.yaml:8: spec.trafficPolicy.outlierDetection.interval: must be at least 1ms and "
		"a whole number of milliseconds\n"
		"t.yaml:17: spec.trafficPolicy.outlierDetection.consecutiveErrors: warning: "
		"deprecated; mapped to consecutiveGatewayErrors (use consecutiveGatewayErrors or "
		"consecutive5xxErrors)\n");
	free(buf);
	bm_errlist_free(&errs);
	bm_errlist_free(&all);
}

/* Size limits that do not fit a table row: regex length (1024) and
 * directResponse bodies (warned over 100 KB, refused over 1 MB). */
static void test_l7_sizes(void)
{
	static const struct {
		const char *field;
		size_t len;
		int r;
		size_t nwarn;
		const char *msg;
	} cases[] = {
		{ "    match: [{uri: {regex: '%s'}}]\n", 1024, 0, 0, NULL },
		{ "    match: [{uri: {regex: '%s'}}]\n", 1025, -EINVAL, 0,
		  "t.yaml:9: spec.http[0].match[0].uri.regex: regex is 1025 characters long, at "
		  "most 1024 are allowed" },
		{ "    directResponse: {status: 200, body: {string: '%s'}}\n", 100 * 1024, 0, 0, NULL },
		{ "    directResponse: {status: 200, body: {string: '%s'}}\n", 100 * 1024 + 1, 0, 1,
		  "t.yaml:8: spec.http[0].directResponse.body.string: warning: body is 102401 bytes; "
		  "large bodies are kept in memory for every route" },
		{ "    directResponse: {status: 200, body: {string: '%s'}}\n", 1024 * 1024 + 1,
		  -EINVAL, 0,
		  "t.yaml:8: spec.http[0].directResponse.body.string: body is 1048577 bytes, at most "
		  "1048576 are allowed" },
		/* 1398104 base64 characters decode to 1048578 bytes. */
		{ "    directResponse: {status: 200, body: {bytes: '%s'}}\n", 1398104, -EINVAL, 0,
		  "t.yaml:8: spec.http[0].directResponse.body.bytes: body is 1048578 bytes" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t cap = cases[i].len + 512;
		char *fill = malloc(cases[i].len + 1), *yaml = malloc(cap), *fmt = malloc(512);
		struct bm_errlist errs = { 0 };
		json_t *out = NULL;
		bool redirect_rule = strstr(cases[i].field, "directResponse") != NULL;

		CU_ASSERT_PTR_NOT_NULL_FATAL(fill);
		CU_ASSERT_PTR_NOT_NULL_FATAL(yaml);
		CU_ASSERT_PTR_NOT_NULL_FATAL(fmt);
		memset(fill, 'a', cases[i].len);
		fill[cases[i].len] = '\0';
		/* A directResponse rule has no route: it starts the rule on line 8. */
		snprintf(fmt, 512, "%s%s", redirect_rule ? VS HTTP "  -" : R, cases[i].field +
			 (redirect_rule ? 3 : 0));
		snprintf(yaml, cap, fmt, fill);
		CU_ASSERT_EQUAL(parse(yaml, &out, &errs), cases[i].r);
		CU_ASSERT_EQUAL(errs.nwarn, cases[i].nwarn);
		if (cases[i].msg) {
			const char *got = cases[i].r ? (errs.n ? errs.msg[0] : "")
						     : (errs.nwarn ? errs.warn[0] : "");

			if (strncmp(got, cases[i].msg, strlen(cases[i].msg)))
				fprintf(stderr, "\nwant %s\ngot  %s\n", cases[i].msg, got);
			CU_ASSERT_NSTRING_EQUAL(got, cases[i].msg, strlen(cases[i].msg));
		}
		json_decref(out);
		bm_errlist_free(&errs);
		free(fill);
		free(yaml);
		free(fmt);
	}
}

BM_SUITE(resource_l7,
	 BM_CASE(test_l7_good),
	 BM_CASE(test_l7_rules),
	 BM_CASE(test_retry_on_tokens),
	 BM_CASE(test_l7_warnings),
	 BM_CASE(test_warning_with_errors),
	 BM_CASE(test_l7_sizes))
