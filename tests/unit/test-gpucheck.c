/* test-gpucheck: the GPU check's CPU reference is stable (a known checksum
 * of a 160x120 image, the same with 1 and 3 threads, another for another
 * frame) and renders a real scene (many colours, sky above, floor and
 * spheres below); the checksum is FNV-1a 64 over R, G, B, A; the comparison
 * counts differing pixels and the largest channel difference; the
 * verification verdict per mode. Then the check itself: where a GPU is
 * usable, the GPU image equals the CPU image at the default size and at an
 * odd size, and a pixel corrupted on the device fails it; without one (or
 * without CUDA in the build) it reports "unavailable" with exit code 69 and
 * a reason, and the GPU checks are skipped - unless IPKIT_REQUIRE_GPU=1
 * (the GPU machine's run), where that is a failure.
 *
 * Links only gpucheck.c (+ gpucheck_cuda.cu) and ipk.c: it builds where
 * libvirt and cJSON are absent. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "gpucheck.h"

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

static int lum(uint32_t p)
{
	return (int)(p & 0xff) + (int)((p >> 8) & 0xff) + (int)((p >> 16) & 0xff);
}

/* CUDA's runtime maps memory where ASan's shadow gap is: let it, so that
 * the sanitizer build (make check) runs on a GPU host too. Only ASan calls
 * this; it changes nothing elsewhere. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
	return "protect_shadow_gap=0";
}

int main(void)
{
	struct ipk_err err = { 0 };
	enum { W = 160, H = 120 };
	static uint32_t a[W * H], b[W * H], c[W * H];
	char sa[17], sb[17], sc[17];

	/* ---- the CPU reference ---- */
	CHECK("cpu: renders 160x120", ipk_gpucheck_render_cpu(W, H, 0, 1, a, &err) == 0);
	CHECK("cpu: 3 threads render", ipk_gpucheck_render_cpu(W, H, 0, 3, b, &err) == 0);
	ipk_gpucheck_checksum(a, W * H, sa);
	ipk_gpucheck_checksum(b, W * H, sb);
	printf("# frame 0 %dx%d checksum %s\n", W, H, sa);
	CHECK("cpu: checksum stable (known value of frame 0, 160x120)", !strcmp(sa, "8dd097bcbb8e3b17"));
	CHECK("cpu: 1 and 3 threads give the same image", !memcmp(a, b, sizeof(a)));
	CHECK("cpu: frame 1 renders", ipk_gpucheck_render_cpu(W, H, 1, 2, c, &err) == 0);
	ipk_gpucheck_checksum(c, W * H, sc);
	CHECK("cpu: frame 1 is another image", strcmp(sa, sc) != 0 && ipk_gpucheck_compare(a, c, W * H, NULL) > 100);

	memcpy(b, a, sizeof(a));
	qsort(b, W * H, sizeof(b[0]), cmp_u32);
	int distinct = 1;
	for (int i = 1; i < W * H; i++)
		distinct += b[i] != b[i - 1];
	printf("# %d distinct colours\n", distinct);
	CHECK("cpu: scene not trivial (over 1000 distinct colours)", distinct > 1000);
	int alpha = 1;
	for (int i = 0; i < W * H; i++)
		alpha &= (a[i] >> 24) == 0xff;
	CHECK("cpu: every pixel opaque", alpha);
	uint32_t sky = a[5 * W + W / 2], floor_ = a[(H - 3) * W + 10];
	CHECK("cpu: sky at the top is blue (B > R)", ((sky >> 16) & 0xff) > (sky & 0xff) + 40);
	CHECK("cpu: the floor at the bottom is grey, not sky", ((floor_ >> 16) & 0xff) < 230 &&
	      abs((int)(floor_ & 0xff) - (int)((floor_ >> 8) & 0xff)) < 20);
	/* the red sphere, left of centre at 40 % of the height (tinted by the sky it mirrors) */
	uint32_t red = a[(H * 2 / 5) * W + W * 3 / 10];
	CHECK("cpu: a red sphere where it belongs (R > G + 40, R > B)",
	      (int)(red & 0xff) > (int)((red >> 8) & 0xff) + 40 && (red & 0xff) > ((red >> 16) & 0xff));
	int dark = W * H, bright = 0;
	for (int i = 0; i < W * H; i++) {
		dark = lum(a[i]) < dark ? lum(a[i]) : dark;
		bright = lum(a[i]) > bright ? lum(a[i]) : bright;
	}
	CHECK("cpu: shadows and highlights (luminance spans over 500 of 765)", bright - dark > 500);
	CHECK("cpu: a bad size is refused", ipk_gpucheck_render_cpu(0, 5, 0, 1, a, &err) < 0 && err.code == IPK_EXIT_USAGE);

	/* ---- checksum and comparison ---- */
	uint32_t px = 0x04030201u;
	ipk_gpucheck_checksum(&px, 1, sb);
	CHECK("checksum: FNV-1a 64 over bytes R, G, B, A", !strcmp(sb, "be7a5e775165785d"));
	ipk_gpucheck_render_cpu(W, H, 0, 1, a, &err);
	memcpy(b, a, sizeof(a));
	int md = -1;
	CHECK("compare: equal images", ipk_gpucheck_compare(a, b, W * H, &md) == 0 && md == 0);
	b[77] ^= 0x00000080u;
	b[900] = (b[900] & 0xff00ffffu) | ((((b[900] >> 16) & 0xff) ^ 0x03u) << 16);
	CHECK("compare: two pixels differ, max difference 128", ipk_gpucheck_compare(a, b, W * H, &md) == 2 && md == 128);

	/* ---- the verdict ---- */
	struct ipk_gpucheck_result r;
	memset(&r, 0, sizeof(r));
	r.status = IPK_GPUCHECK_UNAVAILABLE;
	snprintf(r.message, sizeof(r.message), "no GPU found");
	CHECK("judge: mode no accepts anything", ipk_gpucheck_judge(&r, IPK_GPUCHECK_OFF, &err) == 0);
	CHECK("judge: mode yes, no GPU: fails with 69", ipk_gpucheck_judge(&r, IPK_GPUCHECK_REQUIRE, &err) < 0 &&
	      err.code == IPK_EXIT_UNAVAILABLE && strstr(err.msg, "no GPU found"));
	CHECK("judge: mode auto, no GPU: skipped", ipk_gpucheck_judge(&r, IPK_GPUCHECK_AUTO, &err) == 0 &&
	      r.status == IPK_GPUCHECK_SKIPPED && !strncmp(r.message, "skipped: no GPU (no GPU found)", 30));
	memset(&r, 0, sizeof(r));
	CHECK("judge: mode yes, not run by the target: fails", ipk_gpucheck_judge(&r, IPK_GPUCHECK_REQUIRE, &err) < 0);
	CHECK("judge: mode auto, not run: skipped", ipk_gpucheck_judge(&r, IPK_GPUCHECK_AUTO, &err) == 0 &&
	      r.status == IPK_GPUCHECK_SKIPPED);
	r.status = IPK_GPUCHECK_FAIL;
	snprintf(r.device, sizeof(r.device), "GPU X");
	snprintf(r.message, sizeof(r.message), "3 of 9 pixels differ");
	CHECK("judge: a failed check fails in mode auto, exit 1", ipk_gpucheck_judge(&r, IPK_GPUCHECK_AUTO, &err) < 0 &&
	      err.code == IPK_EXIT_FAIL && !strcmp(err.msg, "verify gpu on the target 'GPU X': 3 of 9 pixels differ"));
	CHECK("modes: names round-trip", ipk_gpucheck_mode_parse("auto") == IPK_GPUCHECK_AUTO &&
	      ipk_gpucheck_mode_parse("yes") == IPK_GPUCHECK_REQUIRE && ipk_gpucheck_mode_parse("no") == IPK_GPUCHECK_OFF &&
	      ipk_gpucheck_mode_parse("maybe") == -1 && !strcmp(ipk_gpucheck_mode_name(IPK_GPUCHECK_REQUIRE), "yes"));

	/* ---- the check on this machine ---- */
	const char *req = getenv("IPKIT_REQUIRE_GPU");
	int require = req && !strcmp(req, "1");
	memset(&err, 0, sizeof(err));
	int rc = ipk_gpucheck_run(NULL, &r, &err);
	if (rc < 0 && r.status == IPK_GPUCHECK_UNAVAILABLE) {
		printf("# unavailable: %s\n", err.msg);
		CHECK("run: unavailable is exit code 69 with a reason", err.code == IPK_EXIT_UNAVAILABLE &&
		      !strncmp(err.msg, "run the gpu check 'cuda': ", 26) && !strcmp(r.message, err.msg));
		if (require)
			CHECK("run: a usable GPU (IPKIT_REQUIRE_GPU=1)", 0);
		else
			SKIP("run: GPU image equals the CPU image", err.msg);
		CHECK_DONE();
	}
	printf("# %s: %s, %dx%d x %d frames = %llu pixels, kernel %.3f ms, cpu reference %.1f ms, whole check %.1f ms, "
	       "max diff %d, %llu bad pixels, checksum %s (reference %s)%s%s\n",
	       ipk_gpucheck_status_name(r.status), r.device, r.width, r.height, r.frames, (unsigned long long)r.pixels, r.gpu_ms,
	       r.cpu_ms, r.total_ms, r.max_diff, (unsigned long long)r.bad_pixels, r.checksum, r.reference,
	       rc ? ": " : "", rc ? err.msg : "");
	CHECK("run: GPU image equals the CPU image (default size)", rc == 0 && r.status == IPK_GPUCHECK_PASS &&
	      r.bad_pixels == 0 && r.max_diff == 0 && !strcmp(r.checksum, r.reference));
	CHECK("run: 8 frames of 1024x768, a device name, a kernel time",
	      r.frames == 8 && r.pixels == 8u * 1024 * 768 && r.device[0] && r.gpu_ms > 0 && r.total_ms >= r.gpu_ms);
	struct ipk_gpucheck_opts o = { .width = 333, .height = 77, .frame = 3, .frames = 2, .threads = 2 };
	rc = ipk_gpucheck_run(&o, &r, &err);
	CHECK("run: odd size 333x77 (partial blocks), frames 3 and 4: equal",
	      rc == 0 && r.pixels == 333 * 77 * 2 && r.bad_pixels == 0);
	o.width = 640, o.height = 480, o.frame = 0, o.frames = 1, o.corrupt_pixel = 1000;
	rc = ipk_gpucheck_run(&o, &r, &err);
	printf("# corrupted: %s\n", err.msg);
	CHECK("run: a pixel changed on the device fails with exit 1, 1 bad pixel, max diff 128",
	      rc < 0 && r.status == IPK_GPUCHECK_FAIL && err.code == IPK_EXIT_FAIL && r.bad_pixels == 1 &&
	      r.max_diff == 128 && strcmp(r.checksum, r.reference) != 0 && strstr(err.msg, "1 of 307200 pixels differ"));
	o.device = 99, o.corrupt_pixel = 0;
	rc = ipk_gpucheck_run(&o, &r, &err);
	CHECK("run: a device that does not exist is unavailable", rc < 0 && r.status == IPK_GPUCHECK_UNAVAILABLE &&
	      err.code == IPK_EXIT_UNAVAILABLE);
	CHECK_DONE();
}
