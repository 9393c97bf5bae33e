#include "ipk.h"

#include <inttypes.h>
#include <stdio.h>
#include <time.h>

int ipk_err_set(struct ipk_err *err, int code, const char *fmt, ...)
{
	if (err) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
		va_end(ap);
		err->code = code;
	}
	return -1;
}

double ipk_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

double ipk_mono(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

void ipk_id_hex(uint64_t hi, uint64_t lo, char out[33])
{
	snprintf(out, 33, "%016" PRIx64 "%016" PRIx64, hi, lo);
}
