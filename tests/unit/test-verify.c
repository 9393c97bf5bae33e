/* Verification helpers: user check commands (status, timeout, environment),
 * an HTTP probe that cannot connect, a guest socket that is not there. */
#include <string.h>

#include "check.h"
#include "verify.h"

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
	CHECK_DONE();
}
