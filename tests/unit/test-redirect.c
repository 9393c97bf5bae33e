/* Unit tests for redirect.h: address validation and the parsers of HAProxy
 * and Caddy answers (texts as HAProxy 2.6 and Caddy 2.6 print them). */
#include <stdlib.h>

#include "check.h"
#include "redirect.h"

static int addr_ok(const char *s, const char *host, int port, int family)
{
	struct ipk_addr a;
	struct ipk_err e = { 0 };
	return ipk_addr_parse(s, &a, &e) == 0 && !strcmp(a.host, host) && a.port == port && a.family == family;
}

/* Rejected, with the reason's text in the message. */
static int addr_bad(const char *s, const char *why)
{
	struct ipk_addr a;
	struct ipk_err e = { 0 };
	char quoted[300];
	snprintf(quoted, sizeof(quoted), "invalid address '%s'", s);
	return ipk_addr_parse(s, &a, &e) == -1 && e.code == IPK_EXIT_DATAERR && strstr(e.msg, quoted) && strstr(e.msg, why);
}

static void test_addr(void)
{
	CHECK("addr ipv4", addr_ok("10.0.0.7:8443", "10.0.0.7", 8443, 4));
	CHECK("addr ipv6 bracketed", addr_ok("[2001:db8::7]:443", "2001:db8::7", 443, 6));
	CHECK("addr ipv6 loopback", addr_ok("[::1]:1", "::1", 1, 6));
	CHECK("addr host name", addr_ok("render-7.example.net:65535", "render-7.example.net", 65535, 0));
	CHECK("addr fqdn with final dot", addr_ok("host.example.:80", "host.example.", 80, 0));
	CHECK("addr port 0 refused", addr_bad("10.0.0.7:0", "port must be 1-65535"));
	CHECK("addr port 65536 refused", addr_bad("10.0.0.7:65536", "port must be 1-65535"));
	CHECK("addr port 99999 refused", addr_bad("10.0.0.7:99999", "port must be 1-65535"));
	CHECK("addr huge port refused", addr_bad("10.0.0.7:123456789012345678901", "port must be 1-65535"));
	CHECK("addr signed port refused", addr_bad("10.0.0.7:+80", "not a number"));
	CHECK("addr named port refused", addr_bad("10.0.0.7:https", "not a number"));
	CHECK("addr missing port", addr_bad("10.0.0.7", "missing ':PORT'"));
	CHECK("addr empty port", addr_bad("10.0.0.7:", "empty port"));
	CHECK("addr empty host", addr_bad(":80", "empty host"));
	CHECK("addr bad ipv4 octet", addr_bad("10.0.0.256:80", "not a valid IPv4 address"));
	CHECK("addr short ipv4", addr_bad("10.0.7:80", "not a valid IPv4 address"));
	CHECK("addr all-digit name", addr_bad("12345:80", "not a valid IPv4 address"));
	CHECK("addr ipv6 without brackets", addr_bad("2001:db8::7:443", "needs brackets"));
	CHECK("addr bad ipv6", addr_bad("[2001:db8:::7]:443", "not a valid IPv6 address"));
	CHECK("addr ipv6 missing bracket", addr_bad("[::1:80", "missing ']'"));
	CHECK("addr ipv6 missing port", addr_bad("[::1]", "missing ':PORT'"));
	CHECK("addr underscore in name", addr_bad("bad_host:80", "character not allowed"));
	CHECK("addr space in name", addr_bad("bad host:80", "character not allowed"));
	CHECK("addr label starts with dash", addr_bad("-a.example:80", "starts with '-'"));
	CHECK("addr label ends with dash", addr_bad("a-.example:80", "ends with '-'"));
	CHECK("addr empty label", addr_bad("a..example:80", "empty label"));
	char longlabel[80];
	memset(longlabel, 'a', 64);
	strcpy(longlabel + 64, ".x:80");
	CHECK("addr 64-character label", addr_bad(longlabel, "longer than 63"));
	struct ipk_addr a;
	char buf[300];
	CHECK("addr format ipv6", ipk_addr_parse("[::1]:8080", &a, NULL) == 0 &&
					  !strcmp(ipk_addr_format(&a, buf, sizeof(buf)), "[::1]:8080"));
	CHECK("addr format ipv4", ipk_addr_parse("10.1.2.3:80", &a, NULL) == 0 &&
					  !strcmp(ipk_addr_format(&a, buf, sizeof(buf)), "10.1.2.3:80"));
}

static const char state_text[] =
	"1\n"
	"# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight "
	"srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state "
	"bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr "
	"srv_agent_addr srv_agent_port\n"
	"3 be 1 sess42 127.0.0.1 2 0 1 1 1 6 3 1 6 0 0 0 - 18081 - 0 0 - - 0\n"
	"3 be 2 nocheck 127.0.0.1 2 0 1 1 1 1 0 2 0 0 0 0 - 18081 - 0 0 - - 0\n"
	"3 be 3 parked 2001:db8::9 0 1 1 1 301 6 3 0 14 0 0 0 - 443 - 0 0 - - 0\n\n";

static void test_hap_state(void)
{
	struct ipk_hap_server s;
	CHECK("hap state finds server", ipk_hap_parse_state(state_text, "sess42", &s) == 1);
	CHECK("hap state address and port", !strcmp(s.addr, "127.0.0.1") && s.port == 18081);
	CHECK("hap state running with check", s.op_state == 2 && s.admin_state == 0 && (s.check_state & 0x04));
	CHECK("hap state no check", ipk_hap_parse_state(state_text, "nocheck", &s) == 1 && s.check_state == 0);
	CHECK("hap state maint ipv6", ipk_hap_parse_state(state_text, "parked", &s) == 1 && s.op_state == 0 &&
					      (s.admin_state & 1) && !strcmp(s.addr, "2001:db8::9") && s.port == 443);
	CHECK("hap state unknown server", ipk_hap_parse_state(state_text, "sess4", &s) == 0);
	CHECK("hap state no header", ipk_hap_parse_state("[3]: Can't find backend.\n", "x", &s) == -1);
	CHECK("hap state header lacks a column",
	      ipk_hap_parse_state("1\n# be_id be_name srv_id srv_name srv_addr\n3 be 1 a 1.2.3.4\n", "a", &s) == -1);
	CHECK("hap state short row", ipk_hap_parse_state("1\n# be_id srv_name srv_addr srv_op_state srv_admin_state "
							 "srv_check_state srv_port\n3 a 1.2.3.4\n", "a", &s) == -1);
}

static void test_hap_stat(void)
{
	const char *csv = "# pxname,svname,status,check_status,check_desc,addr\n"
			  "be,sess42,DOWN,L4CON,\"Connection refused, twice\",127.0.0.1:18099\n"
			  "be,other,UP,L4OK,Layer4 check passed,127.0.0.1:18081\n";
	char buf[128];
	CHECK("hap stat field", ipk_hap_stat_field(csv, "sess42", "check_status", buf, sizeof(buf)) == 1 &&
					!strcmp(buf, "L4CON"));
	CHECK("hap stat quoted field", ipk_hap_stat_field(csv, "sess42", "check_desc", buf, sizeof(buf)) == 1 &&
					       !strcmp(buf, "Connection refused, twice"));
	CHECK("hap stat after quoted field", ipk_hap_stat_field(csv, "sess42", "addr", buf, sizeof(buf)) == 1 &&
						     !strcmp(buf, "127.0.0.1:18099"));
	CHECK("hap stat other row", ipk_hap_stat_field(csv, "other", "status", buf, sizeof(buf)) == 1 && !strcmp(buf, "UP"));
	CHECK("hap stat unknown server", ipk_hap_stat_field(csv, "nope", "status", buf, sizeof(buf)) == 0);
	CHECK("hap stat unknown column", ipk_hap_stat_field(csv, "sess42", "nope", buf, sizeof(buf)) == -1);
}

static void test_hap_answer(void)
{
	char buf[256];
	const char *ok = "changed from|no need to change";
	CHECK("hap answer empty is success", ipk_hap_answer_error("\n", NULL, buf, sizeof(buf)) == 0);
	CHECK("hap answer numbered error", ipk_hap_answer_error("\n[3]: No such server.\n\n", NULL, buf, sizeof(buf)) == 1 &&
						   !strcmp(buf, "No such server."));
	CHECK("hap answer addr change notice is success",
	      ipk_hap_answer_error("\n[4]: IP changed from '127.0.0.1' to '10.0.0.7', port changed from '18081' to '8443' by "
				   "'stats socket command'\n\n", ok, buf, sizeof(buf)) == 0);
	CHECK("hap answer no change notice is success",
	      ipk_hap_answer_error("[4]: no need to change the addr, no need to change the port by 'stats socket command'\n",
				   ok, buf, sizeof(buf)) == 0);
	CHECK("hap answer invalid addr at severity 4",
	      ipk_hap_answer_error("\n[4]: Invalid addr '1.2.3.x' by 'stats socket command'\n\n", ok, buf, sizeof(buf)) == 1 &&
		      !strcmp(buf, "Invalid addr '1.2.3.x' by 'stats socket command'"));
	CHECK("hap answer info is success", ipk_hap_answer_error("[6]: done\n", NULL, buf, sizeof(buf)) == 0);
	CHECK("hap answer unnumbered text is an error",
	      ipk_hap_answer_error("Unknown command.\n", NULL, buf, sizeof(buf)) == 1 && !strcmp(buf, "Unknown command."));
	CHECK("hap answer two errors joined",
	      ipk_hap_answer_error("[3]: a\n[2]: b\n", NULL, buf, sizeof(buf)) == 1 && !strcmp(buf, "a; b"));
}

static void test_caddy(void)
{
	char buf[256];
	ipk_caddy_error_text("{\"error\":\"unknown object ID 'nosuch'\"}\n", buf, sizeof(buf));
	CHECK("caddy error field", !strcmp(buf, "unknown object ID 'nosuch'"));
	ipk_caddy_error_text("  bad gateway\nupstream\n", buf, sizeof(buf));
	CHECK("caddy error plain body", !strcmp(buf, "bad gateway upstream"));
	ipk_caddy_error_text("", buf, sizeof(buf));
	CHECK("caddy error empty body", !strcmp(buf, "(empty body)"));
	CHECK("caddy upstreams one", ipk_caddy_upstreams("[{\"dial\":\"127.0.0.1:18081\"}]\n", buf, sizeof(buf)) == 1 &&
					     !strcmp(buf, "127.0.0.1:18081"));
	CHECK("caddy upstreams two", ipk_caddy_upstreams("[{\"dial\":\"a:1\",\"max_requests\":5},{\"dial\":\"[::1]:2\"}]", buf,
							 sizeof(buf)) == 2 && !strcmp(buf, "a:1,[::1]:2"));
	CHECK("caddy upstreams empty", ipk_caddy_upstreams("[]", buf, sizeof(buf)) == 0 && !strcmp(buf, ""));
	CHECK("caddy upstreams not an array", ipk_caddy_upstreams("{\"error\":\"x\"}", buf, sizeof(buf)) == -1);
	CHECK("caddy upstreams without dial", ipk_caddy_upstreams("[{\"lookup_srv\":\"x\"}]", buf, sizeof(buf)) == -1);
}

static void test_redirector(void)
{
	struct ipk_err e = { 0 };
	struct ipk_redirect_opts o = { .lb = "nginx:/x" };
	CHECK("redirector unknown driver", !ipk_redirector_new(&o, &e) && e.code == IPK_EXIT_USAGE && strstr(e.msg, "'nginx'"));
	o.lb = "webhook:ftp://x";
	CHECK("redirector webhook needs http", !ipk_redirector_new(&o, &e) && e.code == IPK_EXIT_USAGE);
	o.lb = "haproxy";
	CHECK("redirector haproxy needs a socket", !ipk_redirector_new(&o, &e) && e.code == IPK_EXIT_USAGE);
	o.lb = "haproxy:127.0.0.1:99999";
	CHECK("redirector haproxy bad tcp port", !ipk_redirector_new(&o, &e) && strstr(e.msg, "port must be 1-65535"));

	/* Dry runs describe the requests without contacting anything. */
	o = (struct ipk_redirect_opts){ .lb = "webhook:http://127.0.0.1:1/hook", .dry_run = 1 };
	struct ipk_redirector *r = ipk_redirector_new(&o, &e);
	struct ipk_redirect_target t = { .session = "s\"1", .target = NULL };
	struct ipk_redirect_result res = { 0 };
	int rc = r ? (ipk_addr_parse("[::1]:8443", &t.to, &e), ipk_redirect(r, &t, &res, &e)) : -1;
	CHECK("webhook dry run body", rc == 0 && res.sent && strstr(res.sent, "POST http://127.0.0.1:1/hook\n") &&
					      strstr(res.sent, "\"session\":\"s\\\"1\"") &&
					      strstr(res.sent, "\"to\":\"[::1]:8443\",\"host\":\"::1\",\"port\":8443") &&
					      !res.confirmed);
	ipk_redirect_result_clear(&res);
	ipk_redirector_free(r);

	o.lb = "haproxy:/nonexistent/admin.sock";
	r = ipk_redirector_new(&o, &e);
	t = (struct ipk_redirect_target){ .session = "s", .target = "be/s1" };
	ipk_addr_parse("10.0.0.7:8443", &t.to, &e);
	rc = r ? ipk_redirect(r, &t, &res, &e) : -1;
	CHECK("haproxy dry run commands", rc == 0 && res.sent && strstr(res.sent, "set server be/s1 addr 10.0.0.7 port 8443\n") &&
						  strstr(res.sent, "shutdown sessions server be/s1\n"));
	ipk_redirect_result_clear(&res);
	t.target = "be";
	CHECK("haproxy target needs a slash", r && ipk_redirect(r, &t, &res, &e) == -1 && e.code == IPK_EXIT_DATAERR &&
						      strstr(e.msg, "want BACKEND/SERVER"));
	t.target = "be/s1";
	ipk_addr_parse("render.example:8443", &t.to, &e);
	CHECK("haproxy refuses host names", r && ipk_redirect(r, &t, &res, &e) == -1 && e.code == IPK_EXIT_DATAERR &&
						    strstr(e.msg, "an IP address is needed"));
	ipk_redirect_result_clear(&res);
	ipk_redirector_free(r);

	o.lb = "caddy";
	r = ipk_redirector_new(&o, &e);
	t = (struct ipk_redirect_target){ .session = "s", .target = "sess/42" };
	ipk_addr_parse("10.0.0.7:8443", &t.to, &e);
	CHECK("caddy route id checked", r && ipk_redirect(r, &t, &res, &e) == -1 && strstr(e.msg, "invalid caddy route"));
	t.target = "sess42";
	CHECK("caddy dry run default admin", r && ipk_redirect(r, &t, &res, &e) == 0 && res.sent &&
						     strstr(res.sent, "PATCH http://localhost:2019/id/sess42/upstreams\n") &&
						     strstr(res.sent, "[{\"dial\":\"10.0.0.7:8443\"}]"));
	ipk_redirect_result_clear(&res);
	ipk_redirector_free(r);
	ipk_redirector_free(NULL);
}

int main(void)
{
	test_addr();
	test_hap_state();
	test_hap_stat();
	test_hap_answer();
	test_caddy();
	test_redirector();
	CHECK_DONE();
}
