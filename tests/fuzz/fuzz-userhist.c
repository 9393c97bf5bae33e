/* fuzz-userhist: the state directory's history file (userhist.h). Each
 * input is written as DIR/history.jsonl and loaded; when it loads, a sync
 * writes it back and the result must load again with the same users. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "userhist.h"

static char dir[64];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!dir[0]) {
		/* in the working directory (t0900 runs fuzzers in its scratch folder) */
		snprintf(dir, sizeof(dir), "fuzz-userhist-XXXXXX");
		if (!mkdtemp(dir))
			abort();
	}
	char path[128];
	snprintf(path, sizeof(path), "%s/history.jsonl", dir);
	FILE *f = fopen(path, "w");
	if (!f)
		abort();
	fwrite(data, 1, size, f);
	fclose(f);
	struct ipk_err err = { 0 };
	struct ipk_histdb *a = ipk_histdb_new(), *b = ipk_histdb_new();
	if (ipk_histdb_load(a, dir, &err) == 0) {
		if (ipk_histdb_sync(a, dir, &err) != 0 || ipk_histdb_load(b, dir, &err) != 0)
			abort(); /* what was read must be written back readably */
		if (ipk_histdb_users(a) != ipk_histdb_users(b))
			abort();
	} else if (err.code != IPK_EXIT_DATAERR && err.code != IPK_EXIT_OSERR) {
		abort();
	}
	ipk_histdb_free(a);
	ipk_histdb_free(b);
	return 0;
}
