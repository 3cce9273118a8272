/* security.istio.io kinds (PeerAuthentication, AuthorizationPolicy,
 * RequestAuthentication) and DestinationRule trafficPolicy.tls: the seed 05
 * documents, and one failing case per validation rule, asserting the exact
 * "file:line: field.path: message" users see (istio-api §2.6, §3, §4, §5). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "resource.h"
#include "unit.h"

/* Spec bodies start on line 6 of these documents. */
#define PA "apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata:\n  name: r\nspec:\n"
#define AP "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: r\nspec:\n"
#define DR "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: r\nspec:\n"
#define SEL "  selector:\n    matchLabels: {app: web}\n"
/* A rule whose source starts on line 8: "  rules:\n  - from:\n    - source:\n" */
#define FROM "  rules:\n  - from:\n    - source:\n"
#define TO "  rules:\n  - to:\n    - operation:\n"
#define WHEN "  rules:\n  - when:\n"
#define RA "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata:\n  name: r\nspec:\n"
/* A JWT rule whose first field is on line 7. */
#define JWT "  jwtRules:\n  - issuer: https://issuer.example.com\n"

/* The supported documents of examples/seeds/05-security.yaml, verbatim. */
#define SEED_PA \
	"apiVersion: security.istio.io/v1beta1\n" \
	"kind: PeerAuthentication\n" \
	"metadata:\n" \
	"  name: default\n" \
	"  namespace: production\n" \
	"spec:\n" \
	"  mtls:\n" \
	"    mode: STRICT\n"
#define SEED_DR \
	"apiVersion: networking.istio.io/v1alpha3\n" \
	"kind: DestinationRule\n" \
	"metadata:\n" \
	"  name: reviews-mtls\n" \
	"spec:\n" \
	"  host: reviews\n" \
	"  trafficPolicy:\n" \
	"    tls:\n" \
	"      mode: ISTIO_MUTUAL\n"
#define SEED_AP_USER \
	"apiVersion: security.istio.io/v1beta1\n" \
	"kind: AuthorizationPolicy\n" \
	"metadata:\n" \
	"  name: user-service-policy\n" \
	"spec:\n" \
	"  selector:\n" \
	"    matchLabels:\n" \
	"      app: user-service\n" \
	"  rules:\n" \
	"  - from:\n" \
	"    - source:\n" \
	"        principals: [\"cluster.local/ns/default/sa/order-service\"]\n" \
	"    to:\n" \
	"    - operation:\n" \
	"        methods: [\"GET\", \"POST\"]\n"
#define SEED_AP_BACKEND \
	"apiVersion: security.istio.io/v1beta1\n" \
	"kind: AuthorizationPolicy\n" \
	"metadata:\n" \
	"  name: allow-frontend-to-backend\n" \
	"  namespace: production\n" \
	"spec:\n" \
	"  selector:\n" \
	"    matchLabels:\n" \
	"      app: backend\n" \
	"  action: ALLOW\n" \
	"  rules:\n" \
	"  - from:\n" \
	"    - source:\n" \
	"        principals: [\"cluster.local/ns/production/sa/frontend\"]\n" \
	"    to:\n" \
	"    - operation:\n" \
	"        methods: [\"GET\", \"POST\"]\n" \
	"        paths: [\"/api/*\"]\n"
#define SEED_RA \
	"apiVersion: security.istio.io/v1beta1\n" \
	"kind: RequestAuthentication\n" \
	"metadata:\n" \
	"  name: jwt-auth\n" \
	"  namespace: production\n" \
	"spec:\n" \
	"  selector:\n" \
	"    matchLabels:\n" \
	"      app: api\n" \
	"  jwtRules:\n" \
	"  - issuer: \"https://auth.example.com\"\n" \
	"    jwksUri: \"https://auth.example.com/.well-known/jwks.json\"\n"

/* Documents that must parse, with the canonical spec they must produce
 * (NULL: only that they parse). */
static const struct good_case {
	const char *yaml;
	const char *spec;
} good_cases[] = {
	{ SEED_PA, "{\"mtls\":{\"mode\":\"STRICT\"}}" },
	{ SEED_DR, "{\"host\":\"reviews\",\"trafficPolicy\":{\"tls\":{\"mode\":\"ISTIO_MUTUAL\"}}}" },
	{ SEED_AP_USER,
	  "{\"selector\":{\"matchLabels\":{\"app\":\"user-service\"}},\"rules\":[{\"from\":"
	  "[{\"source\":{\"principals\":[\"cluster.local/ns/default/sa/order-service\"]}}],"
	  "\"to\":[{\"operation\":{\"methods\":[\"GET\",\"POST\"]}}]}]}" },
	{ SEED_AP_BACKEND, NULL },
	{ SEED_RA,
	  "{\"selector\":{\"matchLabels\":{\"app\":\"api\"}},\"jwtRules\":[{\"issuer\":"
	  "\"https://auth.example.com\",\"jwksUri\":"
	  "\"https://auth.example.com/.well-known/jwks.json\"}]}" },
	/* RequestAuthentication: every jwtRules field, both API versions. */
	{ RA SEL "  jwtRules:\n"
	  "  - issuer: https://issuer.example.com\n"
	  "    audiences: [api, web]\n"
	  "    jwks: '{\"keys\": [{\"kty\": \"RSA\", \"n\": \"x\", \"e\": \"AQAB\"}]}'\n"
	  "    fromHeaders:\n    - {name: authorization, prefix: 'Bearer '}\n    - name: x-jwt\n"
	  "    fromParams: [token]\n"
	  "    fromCookies: [session]\n"
	  "    outputPayloadToHeader: x-jwt-payload\n"
	  "    forwardOriginalToken: true\n"
	  "    outputClaimToHeaders:\n    - {header: x-sub, claim: sub}\n"
	  "    timeout: 2s\n"
	  "    spaceDelimitedClaims: [roles]\n"
	  "  - issuer: other\n    jwksUri: http://keys.example.com:8080/jwks\n",
	  "{\"selector\":{\"matchLabels\":{\"app\":\"web\"}},\"jwtRules\":[{\"issuer\":"
	  "\"https://issuer.example.com\",\"audiences\":[\"api\",\"web\"],\"jwks\":"
	  "\"{\\\"keys\\\": [{\\\"kty\\\": \\\"RSA\\\", \\\"n\\\": \\\"x\\\", "
	  "\\\"e\\\": \\\"AQAB\\\"}]}\",\"fromHeaders\":[{\"name\":\"authorization\","
	  "\"prefix\":\"Bearer \"},{\"name\":\"x-jwt\"}],\"fromParams\":[\"token\"],"
	  "\"fromCookies\":[\"session\"],\"outputPayloadToHeader\":\"x-jwt-payload\","
	  "\"forwardOriginalToken\":true,\"outputClaimToHeaders\":[{\"header\":\"x-sub\","
	  "\"claim\":\"sub\"}],\"timeout\":\"2s\",\"spaceDelimitedClaims\":[\"roles\"]},"
	  "{\"issuer\":\"other\",\"jwksUri\":\"http://keys.example.com:8080/jwks\"}]}" },
	{ "apiVersion: security.istio.io/v1beta1\nkind: RequestAuthentication\nmetadata: {name: r}\n"
	  "spec: {}\n", "{}" },
	/* Paths: literal braces-free strings and whole-segment templates. */
	{ AP TO "        paths: ['/a/{*}', '/{**}', '/a/{**}/b', '/{*}/{*}/c', '/x/*']\n", NULL },
	/* PeerAuthentication: both API versions, every mode, port overrides. */
	{ "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: r}\n"
	  "spec: {mtls: {mode: UNSET}}\n", NULL },
	{ PA SEL "  mtls: {mode: PERMISSIVE}\n  portLevelMtls:\n    8080: {mode: DISABLE}\n"
	  "    \"9090\": {}\n",
	  "{\"selector\":{\"matchLabels\":{\"app\":\"web\"}},\"mtls\":{\"mode\":\"PERMISSIVE\"},"
	  "\"portLevelMtls\":{\"8080\":{\"mode\":\"DISABLE\"},\"9090\":{}}}" },
	{ PA "  {}\n", "{}" },
	/* AuthorizationPolicy: deny-all, allow-all, DENY everything. */
	{ AP "  {}\n", "{}" },
	{ AP "  rules: [{}]\n", "{\"rules\":[{}]}" },
	{ AP "  action: DENY\n  rules: [{}]\n", "{\"rules\":[{}],\"action\":\"DENY\"}" },
	{ AP "  action: AUDIT\n", NULL },
	/* Ports written as numbers or strings are kept as strings. */
	{ AP TO "        ports: [80, \"8080\"]\n        notPorts: [65535]\n",
	  "{\"rules\":[{\"to\":[{\"operation\":{\"ports\":[\"80\",\"8080\"],"
	  "\"notPorts\":[\"65535\"]}}]}]}" },
	/* Every supported source, operation and when field at once. */
	{ AP SEL "  action: ALLOW\n"
	  "  rules:\n"
	  "  - from:\n"
	  "    - source:\n"
	  "        principals: ['*', 'cluster.local/ns/a/*']\n"
	  "        notPrincipals: ['*/sa/admin']\n"
	  "        requestPrincipals: ['https://issuer/*']\n"
	  "        notRequestPrincipals: [x]\n"
	  "        namespaces: [prod, 'team-*']\n"
	  "        notNamespaces: [kube-system]\n"
	  "        ipBlocks: [10.0.0.0/8, 192.168.1.1]\n"
	  "        notIpBlocks: [10.1.0.0/16]\n"
	  "        remoteIpBlocks: [1.2.3.4]\n"
	  "        notRemoteIpBlocks: [1.2.3.0/24]\n"
	  "    - source:\n"
	  "        serviceAccounts: [prod/web, web]\n"
	  "        notServiceAccounts: [prod/admin]\n"
	  "    to:\n"
	  "    - operation:\n"
	  "        hosts: ['*.example.com', 'api.example.com:*']\n"
	  "        notHosts: [admin.example.com]\n"
	  "        methods: [GET]\n"
	  "        notMethods: [DELETE]\n"
	  "        paths: ['/api/*', '*.png', '/v1/{*}/items/{**}', '/{**}']\n"
	  "        notPaths: ['/admin/{*}']\n"
	  "    when:\n"
	  "    - {key: 'request.headers[x-user]', values: [alice, 'bob*']}\n"
	  "    - {key: source.ip, notValues: [10.0.0.0/8]}\n"
	  "    - {key: remote.ip, values: [1.2.3.4]}\n"
	  "    - {key: source.namespace, values: [prod]}\n"
	  "    - {key: source.serviceAccount, values: [prod/web]}\n"
	  "    - {key: source.principal, values: ['*']}\n"
	  "    - {key: request.auth.principal, values: [a]}\n"
	  "    - {key: request.auth.audiences, values: [a]}\n"
	  "    - {key: request.auth.presenter, values: [a]}\n"
	  "    - {key: 'request.auth.claims[groups]', values: [admins]}\n"
	  "    - {key: 'request.auth.claims[nested][key]', values: [v]}\n"
	  "    - {key: destination.ip, values: [10.0.0.1]}\n"
	  "    - {key: destination.port, values: [8080], notValues: ['9090']}\n"
	  "    - {key: connection.sni, values: ['*.example.com']}\n", NULL },
	/* DestinationRule tls: DISABLE per subset; empty fields are unset. */
	{ DR "  host: a\n  subsets:\n  - name: v1\n    trafficPolicy:\n      tls: {mode: DISABLE}\n",
	  NULL },
	{ DR "  host: a\n  trafficPolicy:\n    tls: {mode: ISTIO_MUTUAL, sni: '', "
	  "subjectAltNames: [], insecureSkipVerify: false}\n", NULL },
	{ DR "  host: a\n  trafficPolicy:\n    tls: {}\n", NULL },
};

struct bad_case {
	const char *yaml;
	const char *want; /* "LINE: path: message" (prefix of the message) */
};

static const struct bad_case bad_cases[] = {
	/* RequestAuthentication (istio-api §5). */
	{ RA "  jwtRules:\n  - audiences: [a]\n", "7: spec.jwtRules[0].issuer: required" },
	{ RA "  jwtRules:\n  - issuer: ''\n", "7: spec.jwtRules[0].issuer: must not be empty" },
	{ RA "  targetRefs:\n  - {kind: Service, name: a}\n", "6: spec.targetRefs: not supported yet" },
	{ RA "  targetRef: {kind: Service, name: a}\n", "6: spec.targetRef: not supported yet" },
	{ RA "  selector: {matchLabels: {app: -a}}\n",
	  "6: spec.selector.matchLabels.app: invalid label value" },
	{ RA "  jwtRules: {issuer: a}\n", "6: spec.jwtRules: must be a list" },
	{ RA JWT "    jwksUri: ftp://keys.example.com/jwks\n",
	  "8: spec.jwtRules[0].jwksUri: \"ftp://keys.example.com/jwks\" is not an http:// or "
	  "https:// URL with a host" },
	{ RA JWT "    jwksUri: https:///jwks\n",
	  "8: spec.jwtRules[0].jwksUri: \"https:///jwks\" is not an http:// or https:// URL" },
	{ RA JWT "    jwksUri: ''\n", "8: spec.jwtRules[0].jwksUri: must not be empty" },
	{ RA JWT "    jwks: '{\"keys\": []}'\n    jwksUri: https://a/jwks\n",
	  "8: spec.jwtRules[0].jwks: cannot be used with jwksUri" },
	{ RA JWT "    jwks: '{\"keys\": '\n",
	  "8: spec.jwtRules[0].jwks: not valid JSON: " },
	{ RA JWT "    jwks: '[1, 2]'\n",
	  "8: spec.jwtRules[0].jwks: must be a JSON Web Key Set: an object with a \"keys\" array" },
	{ RA JWT "    jwks: '{\"keys\": {}}'\n",
	  "8: spec.jwtRules[0].jwks: must be a JSON Web Key Set" },
	{ RA JWT "    fromHeaders:\n    - prefix: 'Bearer '\n",
	  "9: spec.jwtRules[0].fromHeaders[0].name: required" },
	{ RA JWT "    fromHeaders:\n    - name: 'bad header'\n",
	  "9: spec.jwtRules[0].fromHeaders[0].name: \"bad header\" is not a valid header name" },
	{ RA JWT "    fromParams: ['']\n", "8: spec.jwtRules[0].fromParams[0]: must not be empty" },
	{ RA JWT "    fromCookies: [{a: b}]\n", "8: spec.jwtRules[0].fromCookies[0]: must be a string" },
	{ RA JWT "    audiences: ['']\n", "8: spec.jwtRules[0].audiences[0]: must not be empty" },
	{ RA JWT "    forwardOriginalToken: 'yes'\n",
	  "8: spec.jwtRules[0].forwardOriginalToken: must be a boolean" },
	{ RA JWT "    outputPayloadToHeader: 'x:y'\n",
	  "8: spec.jwtRules[0].outputPayloadToHeader: \"x:y\" is not a valid header name" },
	{ RA JWT "    outputClaimToHeaders:\n    - {header: x-sub}\n",
	  "9: spec.jwtRules[0].outputClaimToHeaders[0].claim: required" },
	{ RA JWT "    outputClaimToHeaders:\n    - {claim: sub}\n",
	  "9: spec.jwtRules[0].outputClaimToHeaders[0].header: required" },
	{ RA JWT "    timeout: 0s\n", "8: spec.jwtRules[0].timeout: must be at least 1ms" },
	{ RA JWT "    spaceDelimitedClaims: ['']\n",
	  "8: spec.jwtRules[0].spaceDelimitedClaims[0]: must not be empty" },
	{ RA JWT "    Audiences: [a]\n",
	  "8: spec.jwtRules[0].Audiences: unknown field (did you mean \"audiences\"?)" },
	{ "apiVersion: security.istio.io/v1alpha1\nkind: RequestAuthentication\nmetadata: {name: r}\n"
	  "spec: {}\n", "1: apiVersion: \"security.istio.io/v1alpha1\" is not a valid apiVersion" },
	{ "apiVersion: security.istio.io/v1alpha1\nkind: PeerAuthentication\nmetadata: {name: r}\n"
	  "spec: {}\n",
	  "1: apiVersion: \"security.istio.io/v1alpha1\" is not a valid apiVersion for "
	  "PeerAuthentication (want security.istio.io/v1, v1beta1)" },
	{ "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: r}\n",
	  "1: spec: required" },

	/* ---- PeerAuthentication ---- */
	{ PA "  mtls: {mode: STRICTER}\n",
	  "6: spec.mtls.mode: must be one of UNSET, DISABLE, PERMISSIVE, STRICT (got \"STRICTER\")" },
	{ PA "  mtls: {mode: strict}\n", "6: spec.mtls.mode: must be one of UNSET" },
	{ PA "  mtls:\n    mode: STRICT\n    extra: 1\n", "8: spec.mtls.extra: unknown field" },
	{ PA "  mtls: {mode: STRICT}\n  mode: STRICT\n", "7: spec.mode: unknown field" },
	{ PA "  Mtls: {mode: STRICT}\n", "6: spec.Mtls: unknown field (did you mean \"mtls\"?)" },
	{ PA "  selector:\n    labels: {app: web}\n", "7: spec.selector.labels: unknown field" },
	{ PA "  selector:\n    matchLabels:\n      app: '*'\n",
	  "8: spec.selector.matchLabels.app: invalid label value" },
	{ PA "  mtls: {mode: STRICT}\n  portLevelMtls:\n    8080: {mode: DISABLE}\n",
	  "7: spec.portLevelMtls: portLevelMtls requires selector" },
	{ PA "  selector: {}\n  portLevelMtls:\n    8080: {mode: DISABLE}\n",
	  "7: spec.portLevelMtls: portLevelMtls requires selector" },
	{ PA SEL "  portLevelMtls: {}\n", "8: spec.portLevelMtls: must not be empty" },
	{ PA SEL "  portLevelMtls:\n    70000: {mode: STRICT}\n",
	  "9: spec.portLevelMtls.70000: port \"70000\" is not a number between 1 and 65535" },
	{ PA SEL "  portLevelMtls:\n    0: {mode: STRICT}\n",
	  "9: spec.portLevelMtls.0: port \"0\" is not a number" },
	{ PA SEL "  portLevelMtls:\n    http: {mode: STRICT}\n",
	  "9: spec.portLevelMtls.http: port \"http\" is not a number" },
	{ PA SEL "  portLevelMtls:\n    '080': {mode: STRICT}\n",
	  "9: spec.portLevelMtls.080: port \"080\" is not a number" },
	{ PA SEL "  portLevelMtls:\n    8080: {mode: OFF}\n",
	  "9: spec.portLevelMtls.8080.mode: must be one of UNSET" },
	{ PA SEL "  portLevelMtls:\n    8080: STRICT\n",
	  "9: spec.portLevelMtls.8080: must be an object" },

	/* ---- AuthorizationPolicy: top level ---- */
	{ AP "  targetRef: {kind: Service, name: a}\n", "6: spec.targetRef: not supported yet" },
	{ AP "  targetRefs:\n  - {kind: Service, name: a}\n", "6: spec.targetRefs: not supported yet" },
	{ AP "  action: CUSTOM\n  rules: [{}]\n", "6: spec.action: CUSTOM is not supported yet" },
	{ AP "  provider: {name: opa}\n", "6: spec.provider: not supported yet" },
	{ AP "  action: REJECT\n", "6: spec.action: must be one of ALLOW, DENY, AUDIT" },
	{ AP "  action: DENY\n", "6: spec.action: DENY without rules never matches" },
	{ AP "  action: DENY\n  rules: []\n", "6: spec.action: DENY without rules never matches" },
	{ AP "  rules: {from: []}\n", "6: spec.rules: must be a list" },
	{ AP "  rules:\n  - form: []\n", "7: spec.rules[0].form: unknown field" },
	{ AP "  rules:\n  - from: []\n", "7: spec.rules[0].from: must not be empty" },
	{ AP "  rules:\n  - to: []\n", "7: spec.rules[0].to: must not be empty" },

	/* from[].source */
	{ AP "  rules:\n  - from:\n    - {}\n", "8: spec.rules[0].from[0].source: required" },
	{ AP "  rules:\n  - from:\n    - source: {}\n",
	  "8: spec.rules[0].from[0].source: must not be empty" },
	{ AP FROM "        principal: [a]\n",
	  "9: spec.rules[0].from[0].source.principal: unknown field" },
	{ AP FROM "        principals: [a, '']\n",
	  "9: spec.rules[0].from[0].source.principals[1]: must not be empty" },
	{ AP FROM "        principals: []\n",
	  "9: spec.rules[0].from[0].source.principals: must not be empty" },
	{ AP FROM "        principals: ['cluster.local/*/sa/a']\n",
	  "9: spec.rules[0].from[0].source.principals[0]: \"cluster.local/*/sa/a\": '*' is only "
	  "allowed alone, at the start (suffix match) or at the end (prefix match)" },
	{ AP FROM "        notPrincipals: ['**']\n",
	  "9: spec.rules[0].from[0].source.notPrincipals[0]: \"**\": '*' is only allowed" },
	{ AP FROM "        requestPrincipals: ['']\n",
	  "9: spec.rules[0].from[0].source.requestPrincipals[0]: must not be empty" },
	{ AP FROM "        notRequestPrincipals: ['*a*']\n",
	  "9: spec.rules[0].from[0].source.notRequestPrincipals[0]: \"*a*\": '*' is only allowed" },
	{ AP FROM "        namespaces: [p*d]\n",
	  "9: spec.rules[0].from[0].source.namespaces[0]: \"p*d\": '*' is only allowed" },
	{ AP FROM "        notNamespaces: ['']\n",
	  "9: spec.rules[0].from[0].source.notNamespaces[0]: must not be empty" },
	{ AP FROM "        ipBlocks: [10.0.0.300]\n",
	  "9: spec.rules[0].from[0].source.ipBlocks[0]: \"10.0.0.300\" is not an IPv4 address or CIDR" },
	{ AP FROM "        ipBlocks: [10.0.0.0/33]\n",
	  "9: spec.rules[0].from[0].source.ipBlocks[0]: \"10.0.0.0/33\" is not an IPv4 address" },
	{ AP FROM "        notIpBlocks: ['fd00::/8']\n",
	  "9: spec.rules[0].from[0].source.notIpBlocks[0]: IPv6 addresses are not supported yet" },
	{ AP FROM "        remoteIpBlocks: ['10.*']\n",
	  "9: spec.rules[0].from[0].source.remoteIpBlocks[0]: \"10.*\" is not an IPv4 address" },
	{ AP FROM "        notRemoteIpBlocks: ['::1']\n",
	  "9: spec.rules[0].from[0].source.notRemoteIpBlocks[0]: IPv6 addresses are not supported yet" },
	{ AP FROM "        serviceAccounts: ['prod/*']\n",
	  "9: spec.rules[0].from[0].source.serviceAccounts[0]: \"prod/*\": wildcards are not "
	  "allowed in serviceAccounts" },
	{ AP FROM "        notServiceAccounts: ['a/b/c']\n",
	  "9: spec.rules[0].from[0].source.notServiceAccounts[0]: \"a/b/c\" is not a service account" },
	{ AP FROM "        serviceAccounts: ['']\n",
	  "9: spec.rules[0].from[0].source.serviceAccounts[0]: must not be empty" },
	{ AP FROM "        serviceAccounts: [a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p, q]\n",
	  "9: spec.rules[0].from[0].source.serviceAccounts: at most 16 service accounts are "
	  "allowed (got 17)" },
	{ AP FROM "        principals: [a]\n        serviceAccounts: [prod/web]\n",
	  "10: spec.rules[0].from[0].source.serviceAccounts: cannot be combined with principals "
	  "or namespaces" },
	{ AP FROM "        notServiceAccounts: [prod/web]\n        notNamespaces: [a]\n",
	  "9: spec.rules[0].from[0].source.notServiceAccounts: cannot be combined" },
	{ AP FROM "        trustDomains: [cluster.local]\n",
	  "9: spec.rules[0].from[0].source.trustDomains: not supported yet" },
	{ AP FROM "        notTrustDomains: [other]\n",
	  "9: spec.rules[0].from[0].source.notTrustDomains: not supported yet" },

	/* to[].operation */
	{ AP "  rules:\n  - to:\n    - {}\n", "8: spec.rules[0].to[0].operation: required" },
	{ AP "  rules:\n  - to:\n    - operation: {}\n",
	  "8: spec.rules[0].to[0].operation: must not be empty" },
	{ AP TO "        ports: [0]\n",
	  "9: spec.rules[0].to[0].operation.ports[0]: \"0\" is not a port number (1-65535)" },
	{ AP TO "        ports: [80, 65536]\n",
	  "9: spec.rules[0].to[0].operation.ports[1]: \"65536\" is not a port number" },
	{ AP TO "        notPorts: [http]\n",
	  "9: spec.rules[0].to[0].operation.notPorts[0]: \"http\" is not a port number" },
	{ AP TO "        ports: ['']\n", "9: spec.rules[0].to[0].operation.ports[0]: must not be empty" },
	{ AP TO "        ports: [[80]]\n", "9: spec.rules[0].to[0].operation.ports[0]: must be a string" },
	{ AP TO "        hosts: ['a.*.com']\n",
	  "9: spec.rules[0].to[0].operation.hosts[0]: \"a.*.com\": '*' is only allowed" },
	{ AP TO "        notHosts: ['']\n",
	  "9: spec.rules[0].to[0].operation.notHosts[0]: must not be empty" },
	{ AP TO "        methods: [GET, '']\n",
	  "9: spec.rules[0].to[0].operation.methods[1]: must not be empty" },
	{ AP TO "        notMethods: ['P*T']\n",
	  "9: spec.rules[0].to[0].operation.notMethods[0]: \"P*T\": '*' is only allowed" },
	{ AP TO "        paths: ['/api/*/items']\n",
	  "9: spec.rules[0].to[0].operation.paths[0]: \"/api/*/items\": '*' is only allowed" },
	{ AP TO "        paths: ['/a/{**}/b/{*}']\n",
	  "9: spec.rules[0].to[0].operation.paths[0]: \"/a/{**}/b/{*}\": {**} must be the last "
	  "operator of a path template" },
	{ AP TO "        paths: ['/a/{*}/*']\n",
	  "9: spec.rules[0].to[0].operation.paths[0]: \"/a/{*}/*\": '*' is not allowed outside {*} "
	  "and {**} in a path template" },
	{ AP TO "        paths: ['/a{*}']\n",
	  "9: spec.rules[0].to[0].operation.paths[0]: \"/a{*}\": path templates only support {*} "
	  "and {**}, each as a whole path segment" },
	{ AP TO "        paths: ['/{name}']\n",
	  "9: spec.rules[0].to[0].operation.paths[0]: \"/{name}\": path templates only support" },
	{ AP TO "        paths: ['/a/}']\n",
	  "9: spec.rules[0].to[0].operation.paths[0]: \"/a/}\": path templates only support" },
	{ AP TO "        paths: ['/{**}/{**}']\n",
	  "9: spec.rules[0].to[0].operation.paths[0]: \"/{**}/{**}\": {**} must be the last" },
	{ AP TO "        notPaths: ['/{name}/{*}']\n",
	  "9: spec.rules[0].to[0].operation.notPaths[0]: \"/{name}/{*}\": path templates only "
	  "support {*} and {**}" },
	{ AP TO "        paths: ['/{*}/x/{id=*}']\n",
	  "9: spec.rules[0].to[0].operation.paths[0]: \"/{*}/x/{id=*}\": path templates only" },
	{ AP TO "        paths: ['']\n", "9: spec.rules[0].to[0].operation.paths[0]: must not be empty" },

	/* when[] */
	{ AP WHEN "    - values: [a]\n", "8: spec.rules[0].when[0].key: required" },
	{ AP WHEN "    - {key: '', values: [a]}\n", "8: spec.rules[0].when[0].key: must not be empty" },
	{ AP WHEN "    - {key: source.ip}\n",
	  "8: spec.rules[0].when[0]: at least one of values or notValues is required" },
	{ AP WHEN "    - {key: source.ip, values: []}\n",
	  "8: spec.rules[0].when[0].values: must not be empty" },
	{ AP WHEN "    - {key: source.namespace, values: [a, '']}\n",
	  "8: spec.rules[0].when[0].values[1]: must not be empty" },
	{ AP WHEN "    - {key: request.method, values: [GET]}\n",
	  "8: spec.rules[0].when[0].key: unknown key \"request.method\" (want request.headers[name]" },
	{ AP WHEN "    - {key: 'destination.labels[app]', values: [a]}\n",
	  "8: spec.rules[0].when[0].key: unknown key \"destination.labels[app]\"" },
	{ AP WHEN "    - {key: request.headers, values: [a]}\n",
	  "8: spec.rules[0].when[0].key: \"request.headers\": want the form request.headers[name]" },
	{ AP WHEN "    - {key: 'request.headers[]', values: [a]}\n",
	  "8: spec.rules[0].when[0].key: \"request.headers[]\": want the form" },
	{ AP WHEN "    - {key: 'request.auth.claims[a]x', values: [a]}\n",
	  "8: spec.rules[0].when[0].key: \"request.auth.claims[a]x\": want the form "
	  "request.auth.claims[name]" },
	{ AP WHEN "    - {key: source.trustDomain, values: [a]}\n",
	  "8: spec.rules[0].when[0].key: key \"source.trustDomain\" is not supported yet" },
	{ AP WHEN "    - {key: 'experimental.envoy.filters.a[b]', values: [a]}\n",
	  "8: spec.rules[0].when[0].key: key \"experimental.envoy.filters.a[b]\" is not supported yet" },
	{ AP WHEN "    - key: source.ip\n      values: [10.0.0.1, 10.0.0.256]\n",
	  "9: spec.rules[0].when[0].values[1]: \"10.0.0.256\" is not an IPv4 address or CIDR" },
	{ AP WHEN "    - key: remote.ip\n      values: ['fd00::1']\n",
	  "9: spec.rules[0].when[0].values[0]: IPv6 addresses are not supported yet" },
	{ AP WHEN "    - key: destination.ip\n      notValues:\n      - 1.2.3\n",
	  "10: spec.rules[0].when[0].notValues[0]: \"1.2.3\" is not an IPv4 address" },
	{ AP WHEN "    - key: destination.port\n      values: [80]\n      notValues: [http]\n",
	  "10: spec.rules[0].when[0].notValues[0]: \"http\" is not a port number (1-65535)" },
	{ AP WHEN "    - key: connection.sni\n      values: ['a.*.com']\n",
	  "9: spec.rules[0].when[0].values[0]: \"a.*.com\": '*' is only allowed" },
	{ AP WHEN "    - {key: source.ip, values: [a], extra: 1}\n",
	  "8: spec.rules[0].when[0].extra: unknown field" },

	/* ---- DestinationRule trafficPolicy.tls (§2.6) ---- */
	{ DR "  host: a\n  trafficPolicy:\n    tls: {mode: SIMPLE}\n",
	  "8: spec.trafficPolicy.tls.mode: SIMPLE is not supported yet" },
	{ DR "  host: a\n  trafficPolicy:\n    tls:\n      mode: MUTUAL\n",
	  "9: spec.trafficPolicy.tls.mode: MUTUAL is not supported yet" },
	{ DR "  host: a\n  trafficPolicy:\n    tls: {mode: ISTIO}\n",
	  "8: spec.trafficPolicy.tls.mode: must be one of DISABLE, ISTIO_MUTUAL (got \"ISTIO\")" },
	{ DR "  host: a\n  trafficPolicy:\n    tls:\n      mode: ISTIO_MUTUAL\n      sni: a.example.com\n",
	  "10: spec.trafficPolicy.tls.sni: must be empty with mode ISTIO_MUTUAL" },
	{ DR "  host: a\n  trafficPolicy:\n    tls:\n      mode: ISTIO_MUTUAL\n"
	  "      clientCertificate: /etc/c.pem\n",
	  "10: spec.trafficPolicy.tls.clientCertificate: must be empty with mode ISTIO_MUTUAL" },
	{ DR "  host: a\n  trafficPolicy:\n    tls:\n      mode: ISTIO_MUTUAL\n"
	  "      insecureSkipVerify: true\n",
	  "10: spec.trafficPolicy.tls.insecureSkipVerify: must be empty with mode ISTIO_MUTUAL" },
	{ DR "  host: a\n  subsets:\n  - name: v1\n    trafficPolicy:\n      tls:\n"
	  "        mode: ISTIO_MUTUAL\n        subjectAltNames: [spiffe://x]\n",
	  "12: spec.subsets[0].trafficPolicy.tls.subjectAltNames: must be empty with mode "
	  "ISTIO_MUTUAL" },
	{ DR "  host: a\n  trafficPolicy:\n    tls:\n      mode: DISABLE\n      caCertificates: /c\n",
	  "10: spec.trafficPolicy.tls.caCertificates: not supported yet" },
	{ DR "  host: a\n  trafficPolicy:\n    tls: {credentialName: cred}\n",
	  "8: spec.trafficPolicy.tls.credentialName: not supported yet" },
	{ DR "  host: a\n  trafficPolicy:\n    tls: {privateKey: /k}\n",
	  "8: spec.trafficPolicy.tls.privateKey: not supported yet" },
	{ DR "  host: a\n  trafficPolicy:\n    tls: {caCrl: /crl}\n",
	  "8: spec.trafficPolicy.tls.caCrl: not supported yet" },
	{ DR "  host: a\n  trafficPolicy:\n    tls: {sni: x}\n",
	  "8: spec.trafficPolicy.tls.sni: not supported yet" },
	{ DR "  host: a\n  trafficPolicy:\n    tls: {mode: DISABLE, ciphers: [x]}\n",
	  "8: spec.trafficPolicy.tls.ciphers: unknown field" },
	{ DR "  host: a\n  trafficPolicy:\n    tls: {insecureSkipVerify: maybe}\n",
	  "8: spec.trafficPolicy.tls.insecureSkipVerify: must be a boolean" },
};

static int parse(const char *yaml, json_t **out, struct bm_errlist *errs)
{
	return bm_resources_parse(yaml, strlen(yaml), "t.yaml", 0, out, errs);
}

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

static void test_security_good(void)
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

static void test_security_rules(void)
{
	for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++)
		check_bad(bad_cases[i].yaml, bad_cases[i].want);
}

/* The seed file as users paste it: all five documents parse. */
static void test_security_seed_file(void)
{
	const char *text = "# mTLS, authorization and JWT request authentication.\n" SEED_PA
			   "---\n" SEED_DR "---\n" SEED_AP_USER "---\n" SEED_AP_BACKEND
			   "---\n" SEED_RA;
	struct bm_errlist errs = { 0 };
	json_t *out = NULL;

	CU_ASSERT_EQUAL(bm_resources_parse(text, strlen(text), "05-security.yaml", 0, &out,
					   &errs), 0);
	CU_ASSERT_EQUAL(errs.n, 0);
	CU_ASSERT_EQUAL(json_array_size(out), 5);
	CU_ASSERT_STRING_EQUAL(bm_res_kind(json_array_get(out, 4)), "RequestAuthentication");
	json_decref(out);
	bm_errlist_free(&errs);
}

/* rules: at most 512 (Istio CRD maxItems). */
static void test_security_max_rules(void)
{
	size_t len = strlen(AP) + 16 + 513 * 4;
	char *yaml = malloc(len);
	size_t off;

	CU_ASSERT_PTR_NOT_NULL_FATAL(yaml);
	off = (size_t)snprintf(yaml, len, AP "  rules: [{}");
	for (int i = 1; i < 512; i++)
		off += (size_t)snprintf(yaml + off, len - off, ",{}");
	snprintf(yaml + off, len - off, "]\n");
	{
		struct bm_errlist errs = { 0 };
		json_t *out = NULL;

		CU_ASSERT_EQUAL(parse(yaml, &out, &errs), 0);
		CU_ASSERT_EQUAL(json_array_size(json_object_get(json_object_get(
					json_array_get(out, 0), "spec"), "rules")), 512);
		json_decref(out);
		bm_errlist_free(&errs);
	}
	snprintf(yaml + off, len - off, ",{}]\n");
	check_bad(yaml, "6: spec.rules: at most 512 rules are allowed (got 513)");
	free(yaml);
}

/* jwtRules: at most 4096 (Istio CRD maxItems). */
static void test_security_max_jwt_rules(void)
{
	size_t len = strlen(RA) + 32 + 4097 * 16;
	char *yaml = malloc(len);
	size_t off;

	CU_ASSERT_PTR_NOT_NULL_FATAL(yaml);
	off = (size_t)snprintf(yaml, len, RA "  jwtRules: [{issuer: a}");
	for (int i = 1; i < 4096; i++)
		off += (size_t)snprintf(yaml + off, len - off, ",{issuer: a}");
	snprintf(yaml + off, len - off, "]\n");
	{
		struct bm_errlist errs = { 0 };
		json_t *out = NULL;

		CU_ASSERT_EQUAL(parse(yaml, &out, &errs), 0);
		json_decref(out);
		bm_errlist_free(&errs);
	}
	snprintf(yaml + off, len - off, ",{issuer: b}]\n");
	check_bad(yaml, "6: spec.jwtRules: at most 4096 jwtRules are allowed (got 4097)");
	free(yaml);
}

/* Several problems in one policy: each is reported once, in order. */
static void test_security_all_errors(void)
{
	const char *yaml = AP "  action: CUSTOM\n  rules:\n  - from:\n    - source:\n"
			      "        ipBlocks: ['fd00::1']\n    to:\n    - operation:\n"
			      "        ports: [99999]\n    when:\n    - {key: nope, values: [a]}\n";
	struct bm_errlist errs = { 0 };
	json_t *out = NULL;

	CU_ASSERT_EQUAL(parse(yaml, &out, &errs), -EINVAL);
	CU_ASSERT_EQUAL(errs.n, 4);
	if (errs.n == 4) {
		CU_ASSERT_STRING_EQUAL(errs.msg[0], "t.yaml:6: spec.action: CUSTOM is not "
				       "supported yet");
		CU_ASSERT_STRING_EQUAL(errs.msg[1], "t.yaml:10: spec.rules[0].from[0].source."
				       "ipBlocks[0]: IPv6 addresses are not supported yet");
		CU_ASSERT_STRING_EQUAL(errs.msg[2], "t.yaml:13: spec.rules[0].to[0].operation."
				       "ports[0]: \"99999\" is not a port number (1-65535)");
		CU_ASSERT_PTR_NOT_NULL(strstr(errs.msg[3], "t.yaml:15: spec.rules[0].when[0].key: "
					      "unknown key \"nope\""));
	}
	bm_errlist_free(&errs);
}

static void test_security_kinds(void)
{
	CU_ASSERT_PTR_NOT_NULL(bm_kind_find("PeerAuthentication")->spec);
	CU_ASSERT_PTR_NOT_NULL(bm_kind_find("AuthorizationPolicy")->spec);
	CU_ASSERT_PTR_NOT_NULL(bm_kind_find("RequestAuthentication")->spec);
	CU_ASSERT_PTR_NOT_NULL(bm_kind_lookup("ra"));
	CU_ASSERT(bm_kind_accepts_api_version(bm_kind_find("RequestAuthentication"),
					      "security.istio.io/v1"));
	CU_ASSERT_PTR_NULL(bm_kind_find("WasmPlugin")->spec);
	CU_ASSERT(bm_kind_accepts_api_version(bm_kind_find("AuthorizationPolicy"),
					      "security.istio.io/v1beta1"));
	CU_ASSERT(!bm_kind_accepts_api_version(bm_kind_find("PeerAuthentication"),
					       "networking.istio.io/v1"));
}

BM_SUITE(resource_security,
	 BM_CASE(test_security_good),
	 BM_CASE(test_security_rules),
	 BM_CASE(test_security_seed_file),
	 BM_CASE(test_security_max_rules),
	 BM_CASE(test_security_max_jwt_rules),
	 BM_CASE(test_security_all_errors),
	 BM_CASE(test_security_kinds))
