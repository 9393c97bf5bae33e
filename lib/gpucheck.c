/* gpucheck.c - the GPU rendering check: CPU reference, comparison, the
 * driver, names and the verification verdict. See gpucheck.h. Without CUDA
 * in the build, ipk_gpucheck_render_gpu() is defined here and reports the
 * check unavailable. */
#define _GNU_SOURCE
#include "gpucheck.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gpucheck_scene.h"

struct band {
	int w, h, frame, first, step;
	uint32_t *img;
};

static void *render_rows(void *arg)
{
	const struct band *b = arg;
	for (int y = b->first; y < b->h; y += b->step)
		for (int x = 0; x < b->w; x++)
			b->img[(size_t)y * b->w + x] = gs_pixel(x, y, b->w, b->h, b->frame);
	return NULL;
}

int ipk_gpucheck_render_cpu(int w, int h, int frame, int threads, uint32_t *img, struct ipk_err *err)
{
	if (w <= 0 || h <= 0 || !img || (uint64_t)w * h > IPK_GPUCHECK_MAX_PIXELS)
		return ipk_err_set(err, IPK_EXIT_USAGE, "render the gpu check '%dx%d': bad size", w, h);
	if (threads > 16)
		threads = 16;
	if (threads > h)
		threads = h;
	if (threads <= 1) {
		struct band b = { w, h, frame, 0, 1, img };
		render_rows(&b);
		return 0;
	}
	pthread_t tid[16];
	struct band b[16];
	int started = 0;
	for (int i = 0; i < threads; i++) {
		b[i] = (struct band){ w, h, frame, i, threads, img };
		if (pthread_create(&tid[i], NULL, render_rows, &b[i]) != 0)
			break;
		started++;
	}
	if (!started)
		return ipk_err_set(err, IPK_EXIT_OSERR, "render the gpu check on the cpu: no thread could start");
	/* rows of threads that did not start: done here */
	for (int i = started; i < threads; i++)
		render_rows(&b[i]);
	for (int i = 0; i < started; i++)
		pthread_join(tid[i], NULL);
	return 0;
}

void ipk_gpucheck_checksum(const uint32_t *img, size_t n, char out[17])
{
	uint64_t hsh = 0xcbf29ce484222325ull;
	for (size_t i = 0; i < n; i++)
		for (int k = 0; k < 4; k++) {
			hsh ^= (img[i] >> (8 * k)) & 0xff;
			hsh *= 0x100000001b3ull;
		}
	snprintf(out, 17, "%016llx", (unsigned long long)hsh);
}

uint64_t ipk_gpucheck_compare(const uint32_t *a, const uint32_t *b, size_t n, int *max_diff)
{
	uint64_t bad = 0;
	int md = 0;
	for (size_t i = 0; i < n; i++) {
		if (a[i] == b[i])
			continue;
		bad++;
		for (int k = 0; k < 4; k++) {
			int d = (int)((a[i] >> (8 * k)) & 0xff) - (int)((b[i] >> (8 * k)) & 0xff);
			if (d < 0)
				d = -d;
			if (d > md)
				md = d;
		}
	}
	if (max_diff)
		*max_diff = md;
	return bad;
}

static int finish(struct ipk_gpucheck_result *r, struct ipk_err *err, double t0)
{
	r->total_ms = (ipk_mono() - t0) * 1e3;
	snprintf(r->message, sizeof(r->message), "%.500s", err->msg);
	return -1;
}

int ipk_gpucheck_run(const struct ipk_gpucheck_opts *o, struct ipk_gpucheck_result *r, struct ipk_err *err)
{
	struct ipk_gpucheck_opts def = { 0 };
	if (!o)
		o = &def;
	double t0 = ipk_mono();
	memset(r, 0, sizeof(*r));
	r->width = o->width > 0 ? o->width : IPK_GPUCHECK_WIDTH;
	r->height = o->height > 0 ? o->height : IPK_GPUCHECK_HEIGHT;
	r->frames = o->frames > 0 ? o->frames : IPK_GPUCHECK_FRAMES;
	r->pixels = (uint64_t)r->width * r->height * r->frames;
	r->status = IPK_GPUCHECK_FAIL;
	if (r->pixels > IPK_GPUCHECK_MAX_PIXELS) {
		ipk_err_set(err, IPK_EXIT_USAGE, "run the gpu check '%dx%dx%d': more than %u pixels", r->width, r->height, r->frames,
			    IPK_GPUCHECK_MAX_PIXELS);
		return finish(r, err, t0);
	}
	uint32_t *gpu = calloc(r->pixels, sizeof(uint32_t)), *cpu = malloc(sizeof(uint32_t) * r->pixels);
	if (!gpu || !cpu) {
		free(gpu);
		free(cpu);
		ipk_err_set(err, IPK_EXIT_OSERR, "run the gpu check: out of memory");
		return finish(r, err, t0);
	}
	int rc = -1;
	if (ipk_gpucheck_render_gpu(o->device, r->width, r->height, o->frame, r->frames, o->corrupt_pixel, gpu, r, err) < 0)
		goto out;
	ipk_gpucheck_checksum(gpu, r->pixels, r->checksum);
	int threads = o->threads;
	if (threads <= 0) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		threads = n > 0 ? (int)(n > 16 ? 16 : n) : 1;
	}
	double tc = ipk_mono();
	for (int f = 0; f < r->frames; f++)
		if (ipk_gpucheck_render_cpu(r->width, r->height, o->frame + f, threads,
					    cpu + (size_t)f * r->width * r->height, err) < 0) {
			r->status = IPK_GPUCHECK_FAIL;
			goto out;
		}
	r->cpu_ms = (ipk_mono() - tc) * 1e3;
	ipk_gpucheck_checksum(cpu, r->pixels, r->reference);
	r->bad_pixels = ipk_gpucheck_compare(gpu, cpu, r->pixels, &r->max_diff);
	if (r->bad_pixels) {
		r->status = IPK_GPUCHECK_FAIL;
		ipk_err_set(err, IPK_EXIT_FAIL,
			    "render the gpu check on '%s': %llu of %llu pixels differ from the cpu reference (max difference %d, checksum %s, expected %s)",
			    r->device, (unsigned long long)r->bad_pixels, (unsigned long long)r->pixels, r->max_diff,
			    r->checksum, r->reference);
		goto out;
	}
	r->status = IPK_GPUCHECK_PASS;
	rc = 0;
out:
	free(gpu);
	free(cpu);
	if (rc < 0)
		return finish(r, err, t0);
	r->total_ms = (ipk_mono() - t0) * 1e3;
	return 0;
}

const char *ipk_gpucheck_status_name(int status)
{
	switch (status) {
	case IPK_GPUCHECK_PASS: return "pass";
	case IPK_GPUCHECK_FAIL: return "fail";
	case IPK_GPUCHECK_UNAVAILABLE: return "unavailable";
	case IPK_GPUCHECK_SKIPPED: return "skipped";
	default: return "not-run";
	}
}

const char *ipk_gpucheck_mode_name(int mode)
{
	return mode == IPK_GPUCHECK_AUTO ? "auto" : mode == IPK_GPUCHECK_REQUIRE ? "yes" : "no";
}

int ipk_gpucheck_mode_parse(const char *s)
{
	if (!s)
		return -1;
	if (!strcmp(s, "auto"))
		return IPK_GPUCHECK_AUTO;
	if (!strcmp(s, "yes"))
		return IPK_GPUCHECK_REQUIRE;
	if (!strcmp(s, "no"))
		return IPK_GPUCHECK_OFF;
	return -1;
}

int ipk_gpucheck_judge(struct ipk_gpucheck_result *r, int mode, struct ipk_err *err)
{
	if (mode == IPK_GPUCHECK_OFF)
		return 0;
	switch (r->status) {
	case IPK_GPUCHECK_PASS:
	case IPK_GPUCHECK_SKIPPED:
		return 0;
	case IPK_GPUCHECK_FAIL:
		return ipk_err_set(err, IPK_EXIT_FAIL, "verify gpu on the target '%s': %s",
				   r->device[0] ? r->device : "?", r->message[0] ? r->message : "failed");
	case IPK_GPUCHECK_UNAVAILABLE:
		if (mode == IPK_GPUCHECK_REQUIRE)
			return ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "verify gpu on the target: no usable gpu (%s)",
					   r->message[0] ? r->message : "unavailable");
		{
			char why[sizeof(r->message)];
			snprintf(why, sizeof(why), "%s", r->message);
			snprintf(r->message, sizeof(r->message), "skipped: no GPU (%.480s)", why[0] ? why : "unavailable");
		}
		r->status = IPK_GPUCHECK_SKIPPED;
		return 0;
	default:
		if (mode == IPK_GPUCHECK_REQUIRE)
			return ipk_err_set(err, IPK_EXIT_UNAVAILABLE,
					   "verify gpu on the target: the check was not run there (engine libvirt, or a receiver without it)");
		snprintf(r->message, sizeof(r->message),
			 "skipped: the target did not run the check (engine libvirt has no receiver there)");
		r->status = IPK_GPUCHECK_SKIPPED;
		return 0;
	}
}

#ifndef HAVE_CUDA
int ipk_gpucheck_render_gpu(int dev, int w, int h, int frame, int frames, long corrupt_pixel, uint32_t *img,
			    struct ipk_gpucheck_result *r, struct ipk_err *err)
{
	(void)dev;
	(void)w;
	(void)h;
	(void)frame;
	(void)frames;
	(void)corrupt_pixel;
	(void)img;
	r->status = IPK_GPUCHECK_UNAVAILABLE;
	return ipk_err_set(err, IPK_EXIT_UNAVAILABLE,
			   "run the gpu check 'cuda': this build has no CUDA support (nvcc was not found when it was built)");
}
#endif
