/* libFuzzer target: the Prometheus text parser on arbitrary bytes, both as
 * a whole exposition and as a command-line label selector. Any input must
 * give samples or counted malformed lines, never a crash, a leak or
 * undefined behaviour; the counts must be consistent. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "promtext.h"

static int on_sample(void *arg, const struct ipk_prom_sample *s)
{
	long *n = arg;
	/* Touch everything the callback may read. */
	size_t l = strlen(s->name);
	for (int i = 0; i < s->nlabels; i++)
		l += strlen(s->labels[i].name) + strlen(s->labels[i].value);
	*n += 1 + (long)(l & 0);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ipk_promtext *p = ipk_promtext_new();
	if (!p)
		return 0;
	struct ipk_promtext_stats st;
	struct ipk_err err = { 0 };
	long n = 0;
	if (ipk_promtext_parse(p, (const char *)data, size, on_sample, &n, &st, &err) == 0 &&
	    (n != st.samples || st.samples + st.bad > st.lines || (st.bad > 0) != (st.bad_line > 0)))
		abort();
	const struct ipk_prom_label *lab;
	int nl;
	char why[160];
	long used = ipk_promtext_labels(p, (const char *)data, size, &lab, &nl, why, sizeof(why));
	if (used > (long)size)
		abort();
	ipk_promtext_free(p);
	return 0;
}
