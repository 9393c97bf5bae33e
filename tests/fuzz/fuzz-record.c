/* libFuzzer target: the record reader and the sample parser on arbitrary
 * bytes. Any input must give records or diagnostics, never a crash, a leak or
 * undefined behaviour. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "record.h"
#include "sample.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	FILE *f = fmemopen((void *)data, size, "r");
	if (!f)
		return 0;
	struct ipk_reader *r = ipk_reader_from(f, "fuzz");
	struct ipk_record rec;
	struct ipk_err err = { 0 };
	enum ipk_read_result res;
	while ((res = ipk_reader_next(r, &rec, &err)) != IPK_READ_EOF && res != IPK_READ_ERROR) {
		if (res == IPK_READ_RECORD && rec.type[0] == 's' && !strcmp(rec.type, "sample")) {
			struct ipk_sample s;
			if (ipk_sample_from_json(rec.json, &s, &err) == 0) {
				cJSON *o = ipk_sample_to_json(&s);
				cJSON_Delete(o);
			}
		}
	}
	ipk_reader_close(r);
	fclose(f);
	return 0;
}
