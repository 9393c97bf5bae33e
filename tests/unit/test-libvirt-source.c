/* The libvirt source against libvirt's built-in test driver (test:///default,
 * shared by every connection of this process, with a running domain "test").
 * The test driver reports only state stats, so counters and their deltas are
 * covered by tests/t0200-collect-libvirt.sh against real QEMU guests; here:
 * construction, sessions (name, --map, metadata), host, --domain filtering,
 * paused/vanished/returning domains, and the error paths. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "check.h"
#include "collect.h"
#include "sources.h"

#define URI "test:///default"

struct diags {
	char text[8192];
	int warnings;
};

static void on_diag(void *arg, int level, const char *msg)
{
	struct diags *d = arg;
	size_t l = strlen(d->text);
	snprintf(d->text + l, sizeof(d->text) - l, "%d %s\n", level, msg);
	if (level == 0)
		d->warnings++;
}

/* Build a source, take the baseline, run `intervals` collects; the samples
 * of the last interval stay in *set. Returns 0 or -1. */
static int run(const struct ipk_libvirt_opts *o, int intervals, struct ipk_sample_set *set, struct diags *dg)
{
	struct ipk_err err = { 0 };
	struct ipk_diag diag = { on_diag, dg };
	struct ipk_source *s = ipk_source_libvirt_new(o, &err);
	if (!s) {
		fprintf(stderr, "%s\n", err.msg);
		return -1;
	}
	int rc = s->ops->start(s, 100, &diag, &err);
	for (int i = 0; rc == 0 && i < intervals; i++) {
		ipk_sample_set_clear(set);
		rc = s->ops->collect(s, 101 + i, 1, set, &diag, &err);
	}
	ipk_source_free(s);
	return rc;
}

static const struct ipk_sample *find(const struct ipk_sample_set *set, const char *session)
{
	for (int i = 0; i < set->n; i++)
		if (!strcmp(set->v[i].session, session))
			return &set->v[i];
	return NULL;
}

int main(void)
{
	unsetenv("LIBVIRT_DEFAULT_URI");
	struct ipk_sample_set set = { 0 };
	struct diags dg = { 0 };
	struct ipk_err err = { 0 };
	char host[256] = "";
	gethostname(host, sizeof(host));

	/* A read-write connection of the test itself, to change the domain. */
	virConnectPtr rw = virConnectOpen(URI);
	virDomainPtr dom = rw ? virDomainLookupByName(rw, "test") : NULL;
	CHECK("test driver has domain 'test'", dom != NULL);
	if (!dom)
		return 0;
	char uuid[VIR_UUID_STRING_BUFLEN];
	virDomainGetUUIDString(dom, uuid);

	struct ipk_libvirt_opts o = { .uri = URI };
	struct ipk_source *s = ipk_source_libvirt_new(&o, &err);
	CHECK("constructor succeeds", s != NULL);
	CHECK("label names the URI", s && s->label && !strcmp(s->label, "libvirt " URI));
	CHECK("source is live, not finite", s && s->ops->live && !s->ops->finite);
	ipk_source_free(s);
	ipk_source_free(NULL);

	CHECK("start and two collects", run(&o, 2, &set, &dg) == 0);
	const struct ipk_sample *t = find(&set, "test");
	CHECK("sample for session 'test' (the domain name)", t != NULL && set.n == 1);
	CHECK("host field is the local host name for a local URI", t && host[0] && !strcmp(t->host, host));
	CHECK("source listed as libvirt", t && t->nsources == 1 && !strcmp(t->sources[0], "libvirt"));
	CHECK("no counter fields the test driver does not report", t && !ipk_sample_has(t, IPK_F_CPU) &&
									 !ipk_sample_has(t, IPK_F_TX_PKTS));
	CHECK("no warnings for a healthy domain", dg.warnings == 0);

	o.host = "lab-host-1";
	run(&o, 1, &set, &dg);
	CHECK("--host overrides the host field", set.n == 1 && !strcmp(set.v[0].host, "lab-host-1"));
	o.host = NULL;

	/* Sessions: map by name, map by UUID, metadata, and map beats metadata. */
	struct ipk_session_map m[] = { { "other", "x" }, { "test", "render-7" } };
	o.map = m;
	o.nmap = 2;
	run(&o, 1, &set, &dg);
	CHECK("--map NAME=SESSION names the session", set.n == 1 && find(&set, "render-7"));
	struct ipk_session_map mu[] = { { uuid, "by-uuid" } };
	o.map = mu;
	o.nmap = 1;
	run(&o, 1, &set, &dg);
	CHECK("--map UUID=SESSION names the session", set.n == 1 && find(&set, "by-uuid"));
	o.map = NULL;
	o.nmap = 0;

	int md = virDomainSetMetadata(dom, VIR_DOMAIN_METADATA_ELEMENT, "<session> alice &amp; bob </session>", "ipk",
				      IPK_LIBVIRT_META_NS, VIR_DOMAIN_AFFECT_LIVE);
	CHECK("set metadata on the test domain", md == 0);
	run(&o, 1, &set, &dg);
	CHECK("metadata <session> names the session (trimmed, entities decoded)", set.n == 1 && find(&set, "alice & bob"));
	o.map = m;
	o.nmap = 2;
	run(&o, 1, &set, &dg);
	CHECK("--map beats metadata", set.n == 1 && find(&set, "render-7"));
	o.map = NULL;
	o.nmap = 0;
	virDomainSetMetadata(dom, VIR_DOMAIN_METADATA_ELEMENT, "<session>  </session>", "ipk", IPK_LIBVIRT_META_NS,
			     VIR_DOMAIN_AFFECT_LIVE);
	memset(&dg, 0, sizeof(dg));
	run(&o, 1, &set, &dg);
	CHECK("empty metadata session: the domain name, and a warning",
	      set.n == 1 && find(&set, "test") && dg.warnings == 1 && strstr(dg.text, "ignoring metadata session element"));
	virDomainSetMetadata(dom, VIR_DOMAIN_METADATA_ELEMENT, NULL, NULL, IPK_LIBVIRT_META_NS, VIR_DOMAIN_AFFECT_LIVE);

	/* --domain filtering. */
	const char *only_nope[] = { "nope" };
	const char *only_test[] = { "test" };
	o.domains = only_nope;
	o.ndomains = 1;
	memset(&dg, 0, sizeof(dg));
	run(&o, 2, &set, &dg);
	CHECK("--domain of an absent domain: no sample", set.n == 0);
	CHECK("--domain of an absent domain: one warning naming it",
	      dg.warnings == 1 && strstr(dg.text, "domain 'nope' is not running"));
	o.domains = only_test;
	run(&o, 1, &set, &dg);
	CHECK("--domain test: its sample", set.n == 1 && find(&set, "test"));
	o.domains = NULL;
	o.ndomains = 0;

	/* Paused, vanished and returning domains, on one running source. */
	struct ipk_diag diag = { on_diag, &dg };
	memset(&dg, 0, sizeof(dg));
	s = ipk_source_libvirt_new(&o, &err);
	CHECK("second constructor", s != NULL);
	if (s) {
		s->ops->start(s, 100, &diag, &err);
		CHECK("suspend the domain", virDomainSuspend(dom) == 0);
		ipk_sample_set_clear(&set);
		s->ops->collect(s, 101, 1, &set, &diag, &err);
		CHECK("a paused domain still gets samples", set.n == 1 && find(&set, "test"));
		CHECK("pause noted at info level", strstr(dg.text, "1 libvirt '" URI "': domain 'test' is paused") != NULL);
		virDomainResume(dom);
		CHECK("destroy the domain", virDomainDestroy(dom) == 0);
		ipk_sample_set_clear(&set);
		int r1 = s->ops->collect(s, 102, 1, &set, &diag, &err);
		ipk_sample_set_clear(&set);
		int r2 = s->ops->collect(s, 103, 1, &set, &diag, &err);
		CHECK("collects go on after the domain vanished", r1 == 0 && r2 == 0 && set.n == 0);
		CHECK("vanished domain: one warning", dg.warnings == 1 &&
							      strstr(dg.text, "0 libvirt '" URI "': domain 'test' (session 'test') is gone (shut off)"));
		CHECK("start the domain again", virDomainCreate(dom) == 0);
		ipk_sample_set_clear(&set);
		s->ops->collect(s, 104, 1, &set, &diag, &err);
		CHECK("returning domain gets samples again", set.n == 1 && find(&set, "test"));
		CHECK("returning domain is announced as new", strstr(dg.text, "(new: first sample has no deltas)") != NULL);
		ipk_source_free(s);
	}

	/* LIBVIRT_DEFAULT_URI when no URI is given. */
	setenv("LIBVIRT_DEFAULT_URI", URI, 1);
	struct ipk_libvirt_opts od = { 0 };
	s = ipk_source_libvirt_new(&od, &err);
	CHECK("LIBVIRT_DEFAULT_URI honoured", s && !strcmp(s->label, "libvirt " URI));
	ipk_source_free(s);
	unsetenv("LIBVIRT_DEFAULT_URI");

	/* Errors: code 69, the URI and libvirt's own text, nothing on stderr. */
	/* (libxml2, not libvirt, warns on stderr about the missing file.) */
	struct ipk_libvirt_opts ob = { .uri = "test:///nonexistent/ipkit-node.xml" };
	memset(&err, 0, sizeof(err));
	s = ipk_source_libvirt_new(&ob, &err);
	fflush(stderr);
	char path[] = "/tmp/ipkit-test-libvirt.XXXXXX";
	int fd = mkstemp(path);
	int saved = dup(2);
	dup2(fd, 2);
	struct ipk_err err2 = { 0 }, err3 = { 0 };
	struct ipk_libvirt_opts oz = { .uri = "bogus://x" };
	struct ipk_source *s2 = ipk_source_libvirt_new(&oz, &err2);
	/* port 1 on loopback: refused at once */
	struct ipk_libvirt_opts oc = { .uri = "qemu+tcp://127.0.0.1:1/system" };
	struct ipk_source *s3 = ipk_source_libvirt_new(&oc, &err3);
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	off_t errbytes = lseek(fd, 0, SEEK_END);
	close(fd);
	unlink(path);
	CHECK("bad URI: NULL", s == NULL && s2 == NULL && s3 == NULL);
	CHECK("bad URI: IPK_EXIT_UNAVAILABLE", err.code == IPK_EXIT_UNAVAILABLE && err2.code == IPK_EXIT_UNAVAILABLE &&
						       err3.code == IPK_EXIT_UNAVAILABLE);
	CHECK("refused connection: URI and libvirt's text",
	      strstr(err3.msg, "cannot connect to libvirt 'qemu+tcp://127.0.0.1:1/system': ") == err3.msg &&
		      strstr(err3.msg, "onnection refused") != NULL);
	CHECK("bad URI: message names the URI",
	      strstr(err.msg, "cannot connect to libvirt 'test:///nonexistent/ipkit-node.xml': ") == err.msg &&
		      strstr(err2.msg, "'bogus://x'") != NULL);
	/* libvirt's reason follows the ": " after the URI */
	CHECK("bad URI: message carries libvirt's reason",
	      strlen(err.msg) > strlen("cannot connect to libvirt 'test:///nonexistent/ipkit-node.xml': ") + 10 &&
		      strlen(err2.msg) > strlen("cannot connect to libvirt 'bogus://x': ") + 10);
	CHECK("libvirt prints nothing on stderr", errbytes == 0);
	fprintf(stderr, "bad URI messages: %s | %s | %s\n", err.msg, err2.msg, err3.msg);

	virDomainFree(dom);
	virConnectClose(rw);
	ipk_sample_set_free(&set);
	CHECK_DONE();
}
