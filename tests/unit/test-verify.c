/* Verification helpers: user check commands (status, timeout, environment),
 * an HTTP probe that cannot connect, a guest socket that is not there, and
 * the wait for a guest's heartbeat to move on, against a guest stand-in
 * on a unix socket that answers "verify" as the test guest does. */
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

enum guest_kind { GUEST_TICKING, GUEST_STUCK, GUEST_NO_TICK, GUEST_GOES_BACK };

/* Serve "verify" on path in a child: answer n (0, 1, ...) gives counter and
 * tick by kind. Returns the child's pid. */
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
	for (unsigned n = 0;; n++) {
		int c = accept(s, NULL, NULL);
		if (c < 0)
			_exit(0);
		char buf[64];
		if (read(c, buf, sizeof(buf)) > 0) {
			char out[96];
			int len;
			switch (kind) {
			case GUEST_TICKING: /* the counter waits for its second, the tick moves */
				len = snprintf(out, sizeof(out), "ipkit-verify 00ff 7 %u\n", 40 + n);
				break;
			case GUEST_STUCK:
				len = snprintf(out, sizeof(out), "ipkit-verify 00ff 7 40\n");
				break;
			case GUEST_NO_TICK: /* an older guest: only its counter, once in 3 answers */
				len = snprintf(out, sizeof(out), "ipkit-verify 00ff %u\n", 7 + n / 3);
				break;
			default:
				len = snprintf(out, sizeof(out), "ipkit-verify 00ff %u %u\n", n ? 2 : 7, 40 + n);
				break;
			}
			if (write(c, out, (size_t)len) < 0)
				_exit(1);
		}
		close(c);
	}
}

static void stop_guest(pid_t pid)
{
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
}

static void check_heartbeat_wait(void)
{
	char path[108];
	snprintf(path, sizeof(path), "%s/ipkit-test-verify.%d.sock", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp",
		 (int)getpid());
	struct ipk_err err = { 0 };
	struct ipk_guest_answer a1, a2;

	pid_t g = fake_guest(path, GUEST_TICKING);
	int rc = ipk_guest_verify(path, 5, &a1, &err);
	CHECK("guest answer with a tick: parsed",
	      rc == 0 && !strcmp(a1.checksum, "00ff") && a1.counter == 7 && a1.has_tick && a1.tick == 40);
	rc = ipk_guest_wait_moved(path, 5, 3, &a1, &a2, &err);
	CHECK("ticking guest: moved on by its tick while its counter waits",
	      rc == 0 && a2.counter == 7 && a2.tick == 41);
	stop_guest(g);

	g = fake_guest(path, GUEST_STUCK);
	memset(&err, 0, sizeof(err));
	rc = ipk_guest_verify(path, 5, &a1, &err);
	double t0 = ipk_mono();
	rc = rc ? rc : ipk_guest_wait_moved(path, 5, 0.5, &a1, &a2, &err);
	double took = ipk_mono() - t0;
	CHECK("stuck guest: FAIL after the stuck time", rc < 0 && err.code == IPK_EXIT_FAIL && took >= 0.5 && took < 3);
	CHECK("stuck guest: the message names counter and tick", strstr(err.msg, "stuck at counter 7, tick 40") != NULL);
	stop_guest(g);

	g = fake_guest(path, GUEST_NO_TICK);
	rc = ipk_guest_verify(path, 5, &a1, &err);
	CHECK("guest answer without a tick: parsed", rc == 0 && a1.counter == 7 && !a1.has_tick);
	rc = ipk_guest_wait_moved(path, 5, 3, &a1, &a2, &err);
	CHECK("guest without a tick: moved on when its counter did", rc == 0 && a2.counter == 8);
	stop_guest(g);

	g = fake_guest(path, GUEST_GOES_BACK);
	memset(&err, 0, sizeof(err));
	rc = ipk_guest_verify(path, 5, &a1, &err);
	rc = rc ? rc : ipk_guest_wait_moved(path, 5, 3, &a1, &a2, &err);
	CHECK("guest whose counter went back: FAIL though its tick moved",
	      rc < 0 && err.code == IPK_EXIT_FAIL && strstr(err.msg, "went back from 7 to 2"));
	stop_guest(g);
	unlink(path);

	struct ipk_guest_answer x = { .counter = 5, .tick = 9, .has_tick = 1 }, y = x;
	CHECK("moved: same counter and tick is not moving", !ipk_guest_moved(&x, &y));
	y.counter = 6;
	CHECK("moved: a counter step without a tick step is not moving for a ticking guest", !ipk_guest_moved(&x, &y));
	y.tick = 10;
	CHECK("moved: the tick went up", ipk_guest_moved(&x, &y));
	y.has_tick = 0;
	CHECK("moved: one answer without a tick falls back to the counter", ipk_guest_moved(&x, &y));
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
	check_heartbeat_wait();
	CHECK_DONE();
}
