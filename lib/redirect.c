/* redirect.c - address validation, the driver dispatch, and the helpers the
 * drivers share (TCP probe, HTTP through libcurl); see redirect.h. */
#define _GNU_SOURCE
#include "redirect.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <curl/curl.h>

struct ipk_redirector {
	const struct ipk_lb_driver *drv;
	void *state;
};

/* ---- Addresses ---------------------------------------------------------- */

static int valid_hostname(const char *h, const char **why)
{
	size_t len = strlen(h);
	if (len && h[len - 1] == '.')
		len--; /* a fully qualified name's final dot */
	if (!len) {
		*why = "empty host";
		return 0;
	}
	if (len > 253) {
		*why = "host name longer than 253 characters";
		return 0;
	}
	size_t label = 0;
	int alldigits = 1;
	for (size_t i = 0; i <= len; i++) {
		char c = i < len ? h[i] : '.';
		if (c == '.') {
			if (!label) {
				*why = "empty label in host name";
				return 0;
			}
			if (h[i - 1] == '-') {
				*why = "host name label ends with '-'";
				return 0;
			}
			label = 0;
			continue;
		}
		if (!isalnum((unsigned char)c) && c != '-') {
			*why = "character not allowed in a host name";
			return 0;
		}
		if (c == '-' && label == 0) {
			*why = "host name label starts with '-'";
			return 0;
		}
		if (!isdigit((unsigned char)c))
			alldigits = 0;
		if (++label > 63) {
			*why = "host name label longer than 63 characters";
			return 0;
		}
	}
	if (alldigits) {
		*why = "not a valid IPv4 address";
		return 0;
	}
	return 1;
}

int ipk_addr_parse(const char *s, struct ipk_addr *a, struct ipk_err *err)
{
	memset(a, 0, sizeof(*a));
	const char *host, *port;
	size_t hlen;
	if (!s || !*s)
		return ipk_err_set(err, IPK_EXIT_DATAERR, "invalid address '': empty (want HOST:PORT)");
	if (s[0] == '[') {
		const char *rb = strchr(s, ']');
		if (!rb)
			return ipk_err_set(err, IPK_EXIT_DATAERR, "invalid address '%s': missing ']'", s);
		host = s + 1;
		hlen = (size_t)(rb - host);
		if (rb[1] != ':')
			return ipk_err_set(err, IPK_EXIT_DATAERR, "invalid address '%s': missing ':PORT' after ']'", s);
		port = rb + 2;
	} else {
		const char *colon = strrchr(s, ':');
		if (!colon)
			return ipk_err_set(err, IPK_EXIT_DATAERR, "invalid address '%s': missing ':PORT'", s);
		host = s;
		hlen = (size_t)(colon - s);
		if (memchr(s, ':', hlen))
			return ipk_err_set(err, IPK_EXIT_DATAERR, "invalid address '%s': an IPv6 address needs brackets ([ADDR]:PORT)",
					   s);
		port = colon + 1;
	}
	if (!hlen)
		return ipk_err_set(err, IPK_EXIT_DATAERR, "invalid address '%s': empty host", s);
	if (hlen >= sizeof(a->host))
		return ipk_err_set(err, IPK_EXIT_DATAERR, "invalid address '%s': host too long", s);
	memcpy(a->host, host, hlen);
	a->host[hlen] = '\0';

	if (!*port)
		return ipk_err_set(err, IPK_EXIT_DATAERR, "invalid address '%s': empty port", s);
	long p = 0;
	for (const char *c = port; *c; c++) {
		if (!isdigit((unsigned char)*c))
			return ipk_err_set(err, IPK_EXIT_DATAERR, "invalid address '%s': port '%s' is not a number", s, port);
		p = p * 10 + (*c - '0');
		if (p > 65535)
			break;
	}
	if (p < 1 || p > 65535)
		return ipk_err_set(err, IPK_EXIT_DATAERR, "invalid address '%s': port must be 1-65535", s);
	a->port = (int)p;

	unsigned char bin[16];
	if (s[0] == '[') {
		if (inet_pton(AF_INET6, a->host, bin) != 1)
			return ipk_err_set(err, IPK_EXIT_DATAERR, "invalid address '%s': not a valid IPv6 address", s);
		a->family = 6;
		return 0;
	}
	if (strspn(a->host, "0123456789.") == hlen) {
		if (inet_pton(AF_INET, a->host, bin) != 1)
			return ipk_err_set(err, IPK_EXIT_DATAERR, "invalid address '%s': not a valid IPv4 address", s);
		a->family = 4;
		return 0;
	}
	const char *why = NULL;
	if (!valid_hostname(a->host, &why))
		return ipk_err_set(err, IPK_EXIT_DATAERR, "invalid address '%s': %s", s, why);
	return 0;
}

char *ipk_addr_format(const struct ipk_addr *a, char *buf, size_t n)
{
	if (a->family == 6)
		snprintf(buf, n, "[%s]:%d", a->host, a->port);
	else
		snprintf(buf, n, "%s:%d", a->host, a->port);
	return buf;
}

/* ---- Dispatch ------------------------------------------------------------ */

static const struct ipk_lb_driver *const drivers[] = { &ipk_lb_haproxy, &ipk_lb_caddy, &ipk_lb_webhook };

struct ipk_redirector *ipk_redirector_new(const struct ipk_redirect_opts *o, struct ipk_err *err)
{
	const char *lb = o->lb ? o->lb : "";
	size_t n = strcspn(lb, ":");
	const struct ipk_lb_driver *drv = NULL;
	for (size_t i = 0; i < sizeof(drivers) / sizeof(drivers[0]); i++)
		if (strlen(drivers[i]->name) == n && !strncmp(lb, drivers[i]->name, n))
			drv = drivers[i];
	if (!drv)
		return ipk_err_set(err, IPK_EXIT_USAGE,
				   "invalid load balancer '%s': unknown driver '%.*s' (haproxy, caddy or webhook)", lb, (int)n,
				   lb),
		       NULL;
	const char *where = lb[n] == ':' && lb[n + 1] ? lb + n + 1 : NULL;
	struct ipk_redirector *r = calloc(1, sizeof(*r));
	if (!r)
		return ipk_err_set(err, IPK_EXIT_OSERR, "out of memory"), NULL;
	struct ipk_redirect_opts copy = *o;
	if (!(copy.timeout > 0))
		copy.timeout = 10;
	if (copy.retries < 0)
		copy.retries = 2;
	r->drv = drv;
	if (!(r->state = drv->open(where, &copy, err))) {
		free(r);
		return NULL;
	}
	return r;
}

const char *ipk_redirector_driver(const struct ipk_redirector *r)
{
	return r->drv->name;
}

int ipk_redirect_check_target(const struct ipk_redirector *r, const char *target, struct ipk_err *err)
{
	return r->drv->check_target ? r->drv->check_target(target, err) : 0;
}

int ipk_redirect(struct ipk_redirector *r, const struct ipk_redirect_target *t, struct ipk_redirect_result *res,
		 struct ipk_err *err)
{
	ipk_redirect_result_clear(res);
	res->driver = r->drv->name;
	ipk_addr_format(&t->to, res->to, sizeof(res->to));
	double t0 = ipk_mono();
	int rc = r->drv->redirect(r->state, t, res, err);
	res->seconds = ipk_mono() - t0;
	if (rc < 0)
		res->confirmed = 0;
	return rc;
}

void ipk_redirect_result_clear(struct ipk_redirect_result *res)
{
	free(res->sent);
	memset(res, 0, sizeof(*res));
}

void ipk_redirector_free(struct ipk_redirector *r)
{
	if (!r)
		return;
	r->drv->free(r->state);
	free(r);
}

int ipk_redirect_sent(struct ipk_redirect_result *res, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *add = NULL;
	int n = vasprintf(&add, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -1;
	size_t old = res->sent ? strlen(res->sent) : 0;
	char *s = realloc(res->sent, old + (size_t)n + 1);
	if (!s) {
		free(add);
		return -1;
	}
	memcpy(s + old, add, (size_t)n + 1);
	res->sent = s;
	free(add);
	return 0;
}

/* ---- TCP probe ----------------------------------------------------------- */

int ipk_tcp_probe(const struct ipk_addr *a, double timeout, struct ipk_err *err)
{
	char name[300], port[8];
	ipk_addr_format(a, name, sizeof(name));
	snprintf(port, sizeof(port), "%d", a->port);
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV }, *ai = NULL;
	int gai = getaddrinfo(a->host, port, &hints, &ai);
	if (gai)
		return ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "cannot probe '%s': %s", name, gai_strerror(gai));
	int rc = -1, last = ECONNREFUSED;
	double end = ipk_mono() + timeout;
	for (struct addrinfo *p = ai; p && rc < 0; p = p->ai_next) {
		int fd = socket(p->ai_family, p->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, p->ai_protocol);
		if (fd < 0) {
			last = errno;
			continue;
		}
		if (connect(fd, p->ai_addr, p->ai_addrlen) == 0) {
			rc = 0;
		} else if (errno == EINPROGRESS) {
			struct pollfd pfd = { .fd = fd, .events = POLLOUT };
			int left = (int)((end - ipk_mono()) * 1000);
			int pr = poll(&pfd, 1, left > 0 ? left : 0);
			if (pr == 1) {
				int soerr = 0;
				socklen_t sl = sizeof(soerr);
				getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
				if (soerr == 0)
					rc = 0;
				else
					last = soerr;
			} else {
				last = ETIMEDOUT;
			}
		} else {
			last = errno;
		}
		close(fd);
	}
	freeaddrinfo(ai);
	if (rc < 0)
		return ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "new address '%s' does not accept connections: %s", name,
				   strerror(last));
	return 0;
}

/* ---- HTTP through libcurl ------------------------------------------------ */

#define HTTP_MAX_BODY (1u << 20)

struct http_sink {
	struct ipk_http_resp *p;
	size_t cap;
	int too_big;
};

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
	struct http_sink *s = arg;
	size_t n = size * nmemb;
	struct ipk_http_resp *p = s->p;
	if (p->len + n > HTTP_MAX_BODY) {
		s->too_big = 1;
		return 0;
	}
	if (p->len + n + 1 > s->cap) {
		size_t cap = s->cap ? s->cap : 1024;
		while (cap < p->len + n + 1)
			cap *= 2;
		char *b = realloc(p->body, cap);
		if (!b)
			return 0;
		p->body = b;
		s->cap = cap;
	}
	memcpy(p->body + p->len, data, n);
	p->len += n;
	p->body[p->len] = '\0';
	return n;
}

/* Headers and (for chunked responses) trailers: keep the ETag. */
static size_t on_header(char *data, size_t size, size_t nmemb, void *arg)
{
	struct http_sink *s = arg;
	size_t n = size * nmemb;
	if (n > 5 && !strncasecmp(data, "etag:", 5)) {
		const char *v = data + 5;
		size_t vl = n - 5;
		while (vl && (*v == ' ' || *v == '\t'))
			v++, vl--;
		while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' '))
			vl--;
		if (vl < sizeof(s->p->etag)) {
			memcpy(s->p->etag, v, vl);
			s->p->etag[vl] = '\0';
		}
	}
	return n;
}

int ipk_http(void *curl, const struct ipk_http_req *q, struct ipk_http_resp *p, struct ipk_err *err)
{
	CURL *c = curl;
	char errbuf[CURL_ERROR_SIZE] = "";
	struct http_sink sink = { .p = p };
	struct curl_slist *hdrs = NULL, *h;
	char ifm[600];
	memset(p, 0, sizeof(*p));
	curl_easy_reset(c);
	curl_easy_setopt(c, CURLOPT_URL, q->url);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &sink);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, &sink);
	curl_easy_setopt(c, CURLOPT_USERAGENT, "ipkit/" IPK_VERSION);
	long ms = (long)ceil(q->timeout * 1000);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, ms > 0 ? ms : 1L);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, ms > 0 ? ms : 1L);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, q->method);
	if (q->body) {
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, q->body);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(q->body));
		if (!(h = curl_slist_append(hdrs, "Content-Type: application/json")))
			goto oom;
		hdrs = h;
	}
	if (!(h = curl_slist_append(hdrs, "Expect:")))
		goto oom;
	hdrs = h;
	if (q->if_match) {
		snprintf(ifm, sizeof(ifm), "If-Match: %s", q->if_match);
		if (!(h = curl_slist_append(hdrs, ifm)))
			goto oom;
		hdrs = h;
	}
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
	if (q->cacert)
		curl_easy_setopt(c, CURLOPT_CAINFO, q->cacert);
	if (q->cert)
		curl_easy_setopt(c, CURLOPT_SSLCERT, q->cert);
	if (q->key)
		curl_easy_setopt(c, CURLOPT_SSLKEY, q->key);
	CURLcode rc = curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &p->status);
	curl_slist_free_all(hdrs);
	if (rc != CURLE_OK) {
		if (sink.too_big)
			return ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "%s '%s' failed: response larger than 1 MiB", q->method,
					   q->url);
		return ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "%s '%s' failed: %s", q->method, q->url,
				   errbuf[0] ? errbuf : curl_easy_strerror(rc));
	}
	if (!p->body && !(p->body = calloc(1, 1)))
		return ipk_err_set(err, IPK_EXIT_OSERR, "out of memory");
	return 0;
oom:
	curl_slist_free_all(hdrs);
	return ipk_err_set(err, IPK_EXIT_OSERR, "out of memory");
}

void ipk_http_resp_clear(struct ipk_http_resp *p)
{
	free(p->body);
	memset(p, 0, sizeof(*p));
}
