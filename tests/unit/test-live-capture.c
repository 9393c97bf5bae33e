/* ipk_live_capture_trusted: which live captures can miss guest writes
 * (QEMU before 9.0 under TCG), from the hypervisor version and the domain
 * XML; ipk_live_capture_check against libvirt's test driver. The lab test
 * (t0500) checks the decision ip-migrate takes on the lab's real QEMU. */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "snapshot.h"

#define DOM(type, machine)                                                          \
	"<domain type='" type "' id='3'>\n  <name>g</name>\n  <os>\n    <type arch='x86_64' " \
	"machine='" machine "'>hvm</type>\n  </os>\n</domain>\n"

int main(void)
{
	char why[200];

	CHECK("TCG on QEMU 7.2.22: not trusted",
	      ipk_live_capture_trusted(7002022, DOM("qemu", "pc-i440fx-7.2"), why, sizeof(why)) == 0);
	CHECK("the reason names the version and the fix", strstr(why, "QEMU 7.2.22 under TCG") && strstr(why, "9.0"));
	CHECK("TCG on QEMU 8.2.9: not trusted",
	      ipk_live_capture_trusted(8002009, DOM("qemu", "pc-q35-8.2"), why, sizeof(why)) == 0);
	CHECK("TCG on QEMU 9.0.0: trusted",
	      ipk_live_capture_trusted(9000000, DOM("qemu", "pc-q35-9.0"), why, sizeof(why)) == 1);
	CHECK("TCG on QEMU 10.0.2: trusted",
	      ipk_live_capture_trusted(10000002, DOM("qemu", "pc-i440fx-10.0"), why, sizeof(why)) == 1);
	/* libvirt reports the default binary's version; a domain whose machine
	 * type only a newer QEMU has runs on that newer QEMU */
	CHECK("machine type pc-i440fx-10.0 on a host reporting 7.2: trusted",
	      ipk_live_capture_trusted(7002000, DOM("qemu", "pc-i440fx-10.0"), why, sizeof(why)) == 1);
	CHECK("the reason names the machine type's version", strstr(why, "QEMU 10.0") != NULL);
	CHECK("an old machine type on a new QEMU: trusted",
	      ipk_live_capture_trusted(9002000, DOM("qemu", "pc-i440fx-7.2"), why, sizeof(why)) == 1);
	CHECK("unversioned machine type, unknown version: not trusted",
	      ipk_live_capture_trusted(0, DOM("qemu", "pc"), why, sizeof(why)) == 0);
	CHECK("the reason says the version is unknown", strstr(why, "unknown version") != NULL);
	CHECK("distribution machine type (rhel) gives no version",
	      ipk_live_capture_trusted(7002000, DOM("qemu", "pc-q35-rhel9.4.0"), why, sizeof(why)) == 0);
	CHECK("KVM on QEMU 7.2: trusted (the kernel tracks dirty pages)",
	      ipk_live_capture_trusted(7002000, DOM("kvm", "pc-i440fx-7.2"), why, sizeof(why)) == 1);
	CHECK("type in double quotes is read",
	      ipk_live_capture_trusted(7002000, "<domain type=\"qemu\"><os><type machine=\"pc-q35-7.2\">hvm</type></os></domain>",
				       why, sizeof(why)) == 0);
	CHECK("a <name> element holding 'qemu' is not the type",
	      ipk_live_capture_trusted(7002000, "<domain type='kvm'><name>type='qemu'</name></domain>", why, sizeof(why)) == 1);

	struct ipk_err err = { 0 };
	CHECK("test driver's domain (type 'test'): trusted",
	      ipk_live_capture_check("test:///default", "test", why, sizeof(why), &err) == 1);
	CHECK("missing domain: refused with UNAVAILABLE",
	      ipk_live_capture_check("test:///default", "no-such-domain", why, sizeof(why), &err) == -1 &&
		      err.code == IPK_EXIT_UNAVAILABLE && strstr(err.msg, "no-such-domain"));
	CHECK_DONE();
}
