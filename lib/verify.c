/* verify.c - the test guest's verification protocol, check commands and
 * HTTP probes (see verify.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "verify.h"

static void nap(double s)
{
	struct timespec ts = { (time_t)s, (long)((s - (time_t)s) * 1e9) };
	nanosleep(&ts, NULL);
}

static int connect_unix(const char *path)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof(a.sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	strcpy(a.sun_path, path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

/* Parse one answer line to "verify"; 1 = verified, 0 = not an answer,
 * -1 = error answer. */
static int parse_verify(const char *line, struct ipk_guest_answer *a)
{
	char sum[64];
	uint64_t c;
	if (!strncmp(line, "ipkit-verify-error", 18))
		return -1;
	if (sscanf(line, "ipkit-verify %40s %" SCNu64, sum, &c) == 2 && strlen(sum) < sizeof(a->checksum)) {
		strcpy(a->checksum, sum);
		a->counter = c;
		return 1;
	}
	return 0;
}

/* Parse one answer line to "timer MS"; as parse_verify. */
static int parse_timer(const char *line, struct ipk_guest_answer *a)
{
	uint64_t c;
	if (!strncmp(line, "ipkit-error", 11))
		return -1;
	if (sscanf(line, "ipkit-timer %" SCNu64, &c) == 1) {
		a->counter = c;
		return 1;
	}
	return 0;
}

/* Send req on the guest's control socket (again every 2 s: a guest just
 * restored may not listen yet) until a line parses, or timeout passes. */
static int guest_ask(const char *sock, double timeout, const char *req, int (*parse)(const char *, struct ipk_guest_answer *),
		     const char *what, struct ipk_guest_answer *a, struct ipk_err *err)
{
	double deadline = ipk_mono() + timeout;
	int fd = -1, last_errno = 0;
	char buf[4096];
	size_t have = 0;
	double next_send = 0;
	while (ipk_mono() < deadline) {
		if (fd < 0) {
			fd = connect_unix(sock);
			if (fd < 0) {
				last_errno = errno;
				nap(0.2);
				continue;
			}
			have = 0;
			next_send = 0;
		}
		double now = ipk_mono();
		if (now >= next_send) {
			if (send(fd, req, strlen(req), MSG_NOSIGNAL) < 0) {
				last_errno = errno;
				close(fd);
				fd = -1;
				continue;
			}
			next_send = now + 2.0;
		}
		double wait = (next_send < deadline ? next_send : deadline) - ipk_mono();
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int r = poll(&p, 1, wait > 0 ? (int)(wait * 1000) + 1 : 0);
		if (r <= 0)
			continue;
		ssize_t n = read(fd, buf + have, sizeof(buf) - 1 - have);
		if (n <= 0) {
			last_errno = n < 0 ? errno : ECONNRESET;
			close(fd);
			fd = -1;
			nap(0.2);
			continue;
		}
		have += (size_t)n;
		buf[have] = 0;
		char *nl;
		while ((nl = strchr(buf, '\n'))) {
			*nl = 0;
			char *line = buf;
			while (*line == '\r' || *line == ' ')
				line++;
			line[strcspn(line, "\r")] = 0;
			int pr = parse(line, a);
			if (pr != 0) {
				close(fd);
				if (pr < 0)
					return ipk_err_set(err, IPK_EXIT_FAIL, "%s guest '%s': it answered '%.200s'", what, sock, line);
				return 0;
			}
			size_t rest = have - (size_t)(nl + 1 - buf);
			memmove(buf, nl + 1, rest + 1);
			have = rest;
		}
		if (have >= sizeof(buf) - 1)
			have = 0; /* a line too long: drop it */
	}
	if (fd >= 0)
		close(fd);
	return ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "%s guest '%s': no answer in %g s%s%s", what, sock, timeout,
			   last_errno ? ": " : "", last_errno ? strerror(last_errno) : "");
}

int ipk_guest_verify(const char *sock, double timeout, struct ipk_guest_answer *a, struct ipk_err *err)
{
	memset(a, 0, sizeof(*a));
	return guest_ask(sock, timeout, "\nverify\n", parse_verify, "verify", a, err);
}

int ipk_guest_timer(const char *sock, double timeout, unsigned ms, const struct ipk_guest_answer *first,
		    struct ipk_guest_answer *later, struct ipk_err *err)
{
	char req[32];
	snprintf(req, sizeof(req), "\ntimer %u\n", ms);
	*later = *first;
	if (guest_ask(sock, timeout, req, parse_timer, "timer check of", later, err) < 0) {
		/* it answered "verify" just before: no answer now means its
		 * timers do not run, a failed verification */
		if (err->code == IPK_EXIT_UNAVAILABLE)
			err->code = IPK_EXIT_FAIL;
		return -1;
	}
	if (later->counter < first->counter)
		return ipk_err_set(err, IPK_EXIT_FAIL, "timer check of guest '%s': heartbeat counter went back from %llu to %llu",
				   sock, (unsigned long long)first->counter, (unsigned long long)later->counter);
	return 0;
}

int ipk_check_command(const char *cmd, char *const env[], double timeout, struct ipk_err *err)
{
	pid_t pid = fork();
	if (pid < 0)
		return ipk_err_set(err, IPK_EXIT_OSERR, "check command '%s': fork: %s", cmd, strerror(errno));
	if (pid == 0) {
		for (int i = 0; env && env[i]; i++)
			putenv(env[i]);
		setpgid(0, 0);
		dup2(2, 1); /* the caller's stdout may carry records */
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	double deadline = ipk_mono() + timeout;
	int st;
	for (;;) {
		pid_t w = waitpid(pid, &st, WNOHANG);
		if (w == pid)
			break;
		if (w < 0 && errno != EINTR)
			return ipk_err_set(err, IPK_EXIT_OSERR, "check command '%s': wait: %s", cmd, strerror(errno));
		if (ipk_mono() > deadline) {
			kill(-pid, SIGKILL);
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			return ipk_err_set(err, IPK_EXIT_FAIL, "check command '%s': killed after %g s", cmd, timeout);
		}
		nap(0.05);
	}
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
		return 0;
	if (WIFEXITED(st))
		return ipk_err_set(err, IPK_EXIT_FAIL, "check command '%s': exit %d", cmd, WEXITSTATUS(st));
	return ipk_err_set(err, IPK_EXIT_FAIL, "check command '%s': killed by signal %d", cmd, WTERMSIG(st));
}

static size_t discard(char *p, size_t s, size_t n, void *u)
{
	(void)p, (void)u;
	return s * n;
}

int ipk_check_url(const char *url, double timeout, long *status, struct ipk_err *err)
{
	CURL *c = curl_easy_init();
	if (!c)
		return ipk_err_set(err, IPK_EXIT_OSERR, "check url '%s': curl_easy_init failed", url);
	char ebuf[CURL_ERROR_SIZE] = "";
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)(timeout * 1000));
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, ebuf);
	CURLcode rc = curl_easy_perform(c);
	long code = 0;
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
	curl_easy_cleanup(c);
	if (status)
		*status = code;
	if (rc != CURLE_OK)
		return ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "check url '%s': %s", url, ebuf[0] ? ebuf : curl_easy_strerror(rc));
	if (code < 200 || code > 299)
		return ipk_err_set(err, IPK_EXIT_FAIL, "check url '%s': HTTP status %ld", url, code);
	return 0;
}
