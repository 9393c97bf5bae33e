/* source_nvml.c - GPU utilisation and memory through NVML (see sources.h).
 *
 * libnvidia-ml.so.1 is loaded with dlopen at construction, never linked:
 * ipkit builds and runs without it. The few NVML types and entry points used
 * are declared here (their layout is NVML's stable ABI):
 *   nvmlInit_v2, nvmlShutdown, nvmlErrorString, nvmlDeviceGetCount_v2,
 *   nvmlDeviceGetHandleByIndex_v2, nvmlDeviceGetPciInfo_v3 (optional),
 *   nvmlDeviceGetUUID (optional), nvmlDeviceGetUtilizationRates,
 *   nvmlDeviceGetMemoryInfo.
 * Per interval and GPU: gpu = utilisation.gpu / 100 (NVML's own sampling
 * window, 1/6 s to 1 s depending on the product), gpu_mem_bytes = memory
 * used. A GPU's session is the --map entry for its index ("0"), its PCI bus
 * id (any case, domain of 4 or 8 digits: "0000:3b:00.0") or its UUID
 * ("GPU-..."), else the session given, else "gpuN". Several GPUs of one
 * session give the highest utilisation and the sum of memory. A value NVML
 * cannot give (NOT_SUPPORTED, e.g. utilisation of a MIG-enabled GPU) is
 * absent, never zero; a GPU that fails (GPU_IS_LOST, ...) gives a warning
 * once and is skipped; when every GPU fails the interval fails.
 */
#define _GNU_SOURCE
#include "sources.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define NVML_LIB "libnvidia-ml.so.1"

/* From nvml.h (NVML API version 11/12). */
typedef int nvmlReturn_t;
enum { NVML_SUCCESS = 0, NVML_ERROR_NOT_SUPPORTED = 3 };
typedef struct nvmlDevice_st *nvmlDevice_t;
typedef struct {
	unsigned int gpu, memory; /* percent */
} nvmlUtilization_t;
typedef struct {
	unsigned long long total, free, used; /* bytes */
} nvmlMemory_t;
typedef struct {
	char busIdLegacy[16];
	unsigned int domain, bus, device, pciDeviceId, pciSubSystemId;
	char busId[32];
} nvmlPciInfo_t;

struct nvml_api {
	nvmlReturn_t (*init)(void);
	nvmlReturn_t (*shutdown)(void);
	const char *(*error_string)(nvmlReturn_t);
	nvmlReturn_t (*count)(unsigned int *);
	nvmlReturn_t (*handle)(unsigned int, nvmlDevice_t *);
	nvmlReturn_t (*pci)(nvmlDevice_t, nvmlPciInfo_t *);
	nvmlReturn_t (*uuid)(nvmlDevice_t, char *, unsigned int);
	nvmlReturn_t (*util)(nvmlDevice_t, nvmlUtilization_t *);
	nvmlReturn_t (*mem)(nvmlDevice_t, nvmlMemory_t *);
};

struct nv_gpu {
	nvmlDevice_t h;
	char session[128];
	int failed; /* warned once */
};

struct nv {
	void *lib;
	int inited;
	struct nvml_api api;
	struct nv_gpu *gpu;
	unsigned int ngpu;
};

static const char *nv_err(const struct nv *nv, nvmlReturn_t r)
{
	static const char unknown[] = "unknown NVML error";
	const char *s = nv->api.error_string ? nv->api.error_string(r) : NULL;
	return s ? s : unknown;
}

/* Parse "DOMAIN:BUS:DEV.FN" (hex; domain optional). Returns 0 or -1. */
static int pci_parse(const char *s, unsigned long v[4])
{
	unsigned long dom = 0, bus, dev, fn;
	char tail;
	if (sscanf(s, "%lx:%lx:%lx.%lx%c", &dom, &bus, &dev, &fn, &tail) == 4) {
		/* with domain */
	} else if (sscanf(s, "%lx:%lx.%lx%c", &bus, &dev, &fn, &tail) == 3) {
		dom = 0;
	} else {
		return -1;
	}
	v[0] = dom;
	v[1] = bus;
	v[2] = dev;
	v[3] = fn;
	return 0;
}

static int pci_same(const char *a, const char *b)
{
	unsigned long x[4], y[4];
	if (!strchr(a, ':') || pci_parse(a, x) < 0 || pci_parse(b, y) < 0)
		return 0;
	return !memcmp(x, y, sizeof(x));
}

static void nv_free(struct ipk_source *src)
{
	struct nv *nv = src->priv;
	if (!nv)
		return;
	if (nv->inited && nv->api.shutdown)
		nv->api.shutdown();
	if (nv->lib)
		dlclose(nv->lib);
	free(nv->gpu);
	free(nv);
	src->priv = NULL;
}

struct nv_acc {
	char session[128];
	int has_util, has_mem;
	double util, mem;
};

static int nv_collect(struct ipk_source *src, double ts, double interval, struct ipk_sample_set *set,
		      const struct ipk_diag *diag, struct ipk_err *err)
{
	struct nv *nv = src->priv;
	struct nv_acc acc[64];
	int nacc = 0, nok = 0;
	char lastfail[256] = "";
	for (unsigned int i = 0; i < nv->ngpu; i++) {
		struct nv_gpu *g = &nv->gpu[i];
		nvmlUtilization_t u;
		nvmlMemory_t m;
		nvmlReturn_t ru = nv->api.util(g->h, &u), rm = nv->api.mem(g->h, &m);
		int bad_u = ru != NVML_SUCCESS && ru != NVML_ERROR_NOT_SUPPORTED;
		int bad_m = rm != NVML_SUCCESS && rm != NVML_ERROR_NOT_SUPPORTED;
		if (bad_u || bad_m) {
			snprintf(lastfail, sizeof(lastfail), "cannot read GPU %u: %s", i, nv_err(nv, bad_u ? ru : rm));
			if (!g->failed)
				ipk_diagf(diag, 0, "nvml: %s", lastfail);
			g->failed = 1;
			continue;
		}
		if (g->failed)
			ipk_diagf(diag, 1, "nvml: GPU %u answers again", i);
		g->failed = 0;
		nok++;
		int a = 0;
		while (a < nacc && strcmp(acc[a].session, g->session) != 0)
			a++;
		if (a == nacc) {
			if (nacc == (int)(sizeof(acc) / sizeof(acc[0])))
				continue; /* more than 64 sessions of GPUs: the rest are dropped */
			memset(&acc[a], 0, sizeof(acc[a]));
			snprintf(acc[a].session, sizeof(acc[a].session), "%s", g->session);
			nacc++;
		}
		if (ru == NVML_SUCCESS) {
			double v = u.gpu / 100.0;
			acc[a].util = acc[a].has_util && acc[a].util > v ? acc[a].util : v;
			acc[a].has_util = 1;
		}
		if (rm == NVML_SUCCESS) {
			acc[a].mem += (double)m.used;
			acc[a].has_mem = 1;
		}
	}
	for (int a = 0; a < nacc; a++) {
		struct ipk_sample s;
		ipk_sample_init(&s, acc[a].session, "nvml", ts, interval);
		if (acc[a].has_util)
			ipk_sample_set_field(&s, IPK_F_GPU, acc[a].util);
		if (acc[a].has_mem)
			ipk_sample_set_field(&s, IPK_F_GPU_MEM_BYTES, acc[a].mem);
		if (ipk_sample_set_add(set, &s) < 0)
			return ipk_err_set(err, IPK_EXIT_OSERR, "out of memory");
	}
	if (nv->ngpu > 0 && nok == 0) {
		ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "nvml: %s", lastfail);
		err->msg[0] = '\0'; /* each GPU's failure was reported once already */
		return -1;
	}
	return 0;
}

static const struct ipk_source_ops nv_ops = {
	.name = "nvml",
	.finite = 0,
	.live = 1,
	.collect = nv_collect,
	.start = NULL,
	.free = nv_free,
};

/* dlsym into a function pointer without a cast warning. */
#define SYM(field, name, required)                                                                      \
	do {                                                                                            \
		void *p_ = dlsym(nv->lib, name);                                                        \
		if (!p_ && (required)) {                                                                \
			ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "nvml unavailable: '%s' lacks %s", NVML_LIB, name); \
			goto fail;                                                                      \
		}                                                                                       \
		memcpy(&nv->api.field, &p_, sizeof(p_));                                                \
	} while (0)

struct ipk_source *ipk_source_nvml_new(const struct ipk_nvml_opts *o, struct ipk_err *err)
{
	struct ipk_source *src = calloc(1, sizeof(*src));
	struct nv *nv = calloc(1, sizeof(*nv));
	if (!src || !nv) {
		free(src);
		free(nv);
		ipk_err_set(err, IPK_EXIT_OSERR, "out of memory");
		return NULL;
	}
	src->ops = &nv_ops;
	src->priv = nv;
	nv->lib = dlopen(NVML_LIB, RTLD_NOW | RTLD_LOCAL);
	if (!nv->lib) {
		const char *why = dlerror();
		ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "nvml unavailable: cannot load '%s': %s", NVML_LIB,
			    why ? why : "unknown error");
		goto fail;
	}
	SYM(init, "nvmlInit_v2", 1);
	SYM(shutdown, "nvmlShutdown", 1);
	SYM(error_string, "nvmlErrorString", 1);
	SYM(count, "nvmlDeviceGetCount_v2", 1);
	SYM(handle, "nvmlDeviceGetHandleByIndex_v2", 1);
	SYM(util, "nvmlDeviceGetUtilizationRates", 1);
	SYM(mem, "nvmlDeviceGetMemoryInfo", 1);
	SYM(pci, "nvmlDeviceGetPciInfo_v3", 0);
	SYM(uuid, "nvmlDeviceGetUUID", 0);
	nvmlReturn_t r = nv->api.init();
	if (r != NVML_SUCCESS) {
		ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "nvml unavailable: nvmlInit_v2 failed: %s", nv_err(nv, r));
		goto fail;
	}
	nv->inited = 1;
	unsigned int n = 0;
	if ((r = nv->api.count(&n)) != NVML_SUCCESS) {
		ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "nvml unavailable: cannot count GPUs: %s", nv_err(nv, r));
		goto fail;
	}
	if (n == 0) {
		ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "nvml unavailable: no GPU found");
		goto fail;
	}
	if (!(nv->gpu = calloc(n, sizeof(*nv->gpu)))) {
		ipk_err_set(err, IPK_EXIT_OSERR, "out of memory");
		goto fail;
	}
	for (unsigned int i = 0; i < n; i++) {
		struct nv_gpu *g = &nv->gpu[nv->ngpu];
		if ((r = nv->api.handle(i, &g->h)) != NVML_SUCCESS) {
			ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "nvml unavailable: cannot open GPU %u: %s", i, nv_err(nv, r));
			goto fail;
		}
		char idx[16], uuid[96] = "";
		nvmlPciInfo_t pci;
		int have_pci = nv->api.pci && nv->api.pci(g->h, &pci) == NVML_SUCCESS;
		if (nv->api.uuid && nv->api.uuid(g->h, uuid, sizeof(uuid)) != NVML_SUCCESS)
			uuid[0] = '\0';
		uuid[sizeof(uuid) - 1] = '\0';
		if (have_pci)
			pci.busId[sizeof(pci.busId) - 1] = '\0';
		snprintf(idx, sizeof(idx), "%u", i);
		const char *sess = NULL;
		for (int k = 0; k < o->nmap && !sess; k++) {
			const char *key = o->map[k].key;
			if (!strcmp(key, idx) || (uuid[0] && !strcasecmp(key, uuid)) || (have_pci && pci_same(key, pci.busId)))
				sess = o->map[k].session;
		}
		if (sess)
			snprintf(g->session, sizeof(g->session), "%s", sess);
		else if (o->session && *o->session)
			snprintf(g->session, sizeof(g->session), "%s", o->session);
		else
			snprintf(g->session, sizeof(g->session), "gpu%u", i);
		nv->ngpu++;
	}
	if (asprintf(&src->label, "nvml (%u GPU%s)", nv->ngpu, nv->ngpu == 1 ? "" : "s") < 0) {
		src->label = NULL;
		ipk_err_set(err, IPK_EXIT_OSERR, "out of memory");
		goto fail;
	}
	return src;
fail:
	ipk_source_free(src);
	return NULL;
}
