/* Verification helpers: user check commands (status, timeout, environment),
 * an HTTP probe that cannot connect, a guest socket that is not there, and
 * the guest's timer check, against a stand-in on a unix socket that answers
 * "verify" and "timer MS" as the test guest does, or does not. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "verify.h"

enum guest_kind { GUEST_RUNS, GUEST_NO_TIMER, GUEST_REFUSES, GUEST_GOES_BACK };

/* Serve the control socket in a child: "verify" gets checksum 00ff and
 * counter 7; "timer MS", by kind, an answer after MS ms with counter 7+MS
 * (so the test sees the MS sent), none, a refusal, or counter 2. Returns
 * the child's pid. */
static pid_t fake_guest(const char *path, enum guest_kind kind)
{
	unlink(path);
	int s = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
	if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(s, 8) < 0) {
		perror("fake guest");
		exit(1);
	}
	pid_t pid = fork();
	if (pid != 0) {
		close(s);
		return pid;
	}
	for (;;) {
		int c = accept(s, NULL, NULL);
		if (c < 0)
			_exit(0);
		char buf[64] = "";
		ssize_t n = read(c, buf, sizeof(buf) - 1);
		char out[96] = "";
		unsigned ms;
		if (n > 0 && strstr(buf, "verify")) {
			snprintf(out, sizeof(out), "ipkit-verify 00ff 7\n");
		} else if (n > 0 && sscanf(strstr(buf, "timer") ? strstr(buf, "timer") : "", "timer %u", &ms) == 1) {
			if (kind == GUEST_RUNS) {
				usleep(ms * 1000);
				snprintf(out, sizeof(out), "ipkit-timer %u\n", 7 + ms);
			} else if (kind == GUEST_REFUSES) {
				snprintf(out, sizeof(out), "ipkit-error unknown-command\n");
			} else if (kind == GUEST_GOES_BACK) {
				snprintf(out, sizeof(out), "ipkit-timer 2\n");
			} else {
				pause(); /* its timers do not run */
			}
		}
		if (out[0] && write(c, out, strlen(out)) < 0)
			_exit(1);
		close(c);
	}
}

static void stop_guest(pid_t pid)
{
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
}

/* Start a stand-in of kind on path, ask "verify", then the timer check
 * with limit seconds; stop it. Returns the first failure's rc (err set). */
static int ask_stand_in(const char *path, enum guest_kind kind, double limit, struct ipk_err *err)
{
	struct ipk_guest_answer a1, a2;
	memset(err, 0, sizeof(*err));
	pid_t g = fake_guest(path, kind);
	int rc = ipk_guest_verify(path, 5, &a1, err);
	rc = rc ? rc : ipk_guest_timer(path, limit, 50, &a1, &a2, err);
	stop_guest(g);
	return rc;
}

static void check_timer(void)
{
	char path[108];
	snprintf(path, sizeof(path), "%s/ipkit-test-verify.%d.sock", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp",
		 (int)getpid());
	struct ipk_err err = { 0 };
	struct ipk_guest_answer a1, a2;

	pid_t g = fake_guest(path, GUEST_RUNS);
	int rc = ipk_guest_verify(path, 5, &a1, &err);
	CHECK("guest answer: parsed", rc == 0 && !strcmp(a1.checksum, "00ff") && a1.counter == 7);
	double t0 = ipk_mono();
	rc = ipk_guest_timer(path, 3, 50, &a1, &a2, &err);
	double took = ipk_mono() - t0;
	CHECK("timer check: answered once the 50 ms timer fired", rc == 0 && a2.counter == 57 && took >= 0.05);
	CHECK("timer check: the checksum is kept", !strcmp(a2.checksum, "00ff"));
	stop_guest(g);

	t0 = ipk_mono();
	rc = ask_stand_in(path, GUEST_NO_TIMER, 0.5, &err);
	took = ipk_mono() - t0;
	CHECK("timers that do not run: a failed verification after the limit",
	      rc < 0 && err.code == IPK_EXIT_FAIL && took >= 0.5 && took < 3);
	CHECK("timers that do not run: the message says which check", strstr(err.msg, "timer check of guest") != NULL);

	rc = ask_stand_in(path, GUEST_REFUSES, 3, &err);
	CHECK("guest that refuses the timer: FAIL naming its answer",
	      rc < 0 && err.code == IPK_EXIT_FAIL && strstr(err.msg, "unknown-command"));

	rc = ask_stand_in(path, GUEST_GOES_BACK, 3, &err);
	CHECK("guest whose counter went back: FAIL",
	      rc < 0 && err.code == IPK_EXIT_FAIL && strstr(err.msg, "went back from 7 to 2"));
	unlink(path);
}

int main(void)
{
	struct ipk_err err = { 0 };
	CHECK("check command exit 0 passes", ipk_check_command("exit 0", NULL, 5, &err) == 0);
	CHECK("check command exit 3 fails", ipk_check_command("exit 3", NULL, 5, &err) < 0 && err.code == IPK_EXIT_FAIL);
	CHECK("check command failure names the status", strstr(err.msg, "exit 3") != NULL);
	char e1[] = "IPKIT_DOMAIN=vdi-7";
	char *env[] = { e1, NULL };
	CHECK("check command sees its environment", ipk_check_command("test \"$IPKIT_DOMAIN\" = vdi-7", env, 5, &err) == 0);
	double t0 = ipk_mono();
	int rc = ipk_check_command("sleep 5", NULL, 0.3, &err);
	CHECK("check command killed at its timeout", rc < 0 && ipk_mono() - t0 < 3 && strstr(err.msg, "killed after"));
	memset(&err, 0, sizeof(err));
	rc = ipk_check_url("http://127.0.0.1:1/health", 2, NULL, &err);
	CHECK("url probe: refused connection is UNAVAILABLE", rc < 0 && err.code == IPK_EXIT_UNAVAILABLE);
	struct ipk_guest_answer a;
	t0 = ipk_mono();
	rc = ipk_guest_verify("/nonexistent/guest.sock", 0.5, &a, &err);
	CHECK("guest socket missing: UNAVAILABLE after the timeout",
	      rc < 0 && err.code == IPK_EXIT_UNAVAILABLE && ipk_mono() - t0 >= 0.5 && ipk_mono() - t0 < 3);
	check_timer();
	CHECK_DONE();
}
