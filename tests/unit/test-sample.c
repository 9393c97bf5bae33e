/* Samples: merge rules, masks (absent fields stay absent), JSON round trip. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "record.h"
#include "sample.h"

int main(void)
{
	struct ipk_sample a, b;
	ipk_sample_init(&a, "s1", "replay", 10, 1);
	ipk_sample_set_field(&a, IPK_F_EVENTS, 3);
	ipk_sample_set_field(&a, IPK_F_INPUT_AGE, 0.5);
	ipk_sample_set_field(&a, IPK_F_CPU, 0.2);
	strcpy(a.user, "user7");
	ipk_sample_init(&b, "s1", "libvirt", 10, 1);
	ipk_sample_set_field(&b, IPK_F_EVENTS, 4);
	ipk_sample_set_field(&b, IPK_F_INPUT_AGE, 0.25);
	ipk_sample_set_field(&b, IPK_F_CPU, 0.7);
	ipk_sample_set_field(&b, IPK_F_TX_PKTS, 9);
	strcpy(b.host, "h1");

	struct ipk_sample_set set = { 0 };
	ipk_sample_set_add(&set, &a);
	ipk_sample_set_add(&set, &b);
	struct ipk_sample c;
	ipk_sample_init(&c, "s2", "libvirt", 10, 1);
	ipk_sample_set_add(&set, &c);
	CHECK("one sample per session", set.n == 2);
	struct ipk_sample *m = &set.v[0];
	CHECK_NEAR("counts add", m->val[IPK_F_EVENTS], 7, 0);
	CHECK_NEAR("input age takes the most recent", m->val[IPK_F_INPUT_AGE], 0.25, 0);
	CHECK_NEAR("utilisation takes the max", m->val[IPK_F_CPU], 0.7, 0);
	CHECK("field of one source kept", ipk_sample_has(m, IPK_F_TX_PKTS));
	CHECK("absent field stays absent", !ipk_sample_has(m, IPK_F_GPU));
	CHECK("user and host both kept", !strcmp(m->user, "user7") && !strcmp(m->host, "h1"));
	CHECK("both sources listed", m->nsources == 2);

	cJSON *j = ipk_sample_to_json(m);
	char *txt = cJSON_PrintUnformatted(j);
	CHECK("json has no gpu field", strstr(txt, "\"gpu\"") == NULL);
	CHECK("json has events", strstr(txt, "\"events\":7") != NULL);
	struct ipk_err err = { 0 };
	CHECK("sample record validates", ipk_record_validate(j, &err) == 0);
	struct ipk_sample back;
	CHECK("parse back", ipk_sample_from_json(j, &back, &err) == 0);
	CHECK("round trip keeps mask", back.mask == m->mask);
	CHECK_NEAR("round trip keeps values", back.val[IPK_F_TX_PKTS], 9, 0);
	CHECK("round trip keeps sources", back.nsources == 2 && !strcmp(back.sources[1], "libvirt"));
	cJSON_free(txt);

	char line[IPK_SAMPLE_TEXT_MAX];
	strcpy(m->session, "q\"uote\\back\nline");
	ipk_sample_set_field(m, IPK_F_MOUSE_PX, 1234.56789012);
	ipk_sample_set_field(m, IPK_F_RX_BYTES, 123456789012345.0);
	ipk_sample_set_field(m, IPK_F_CPU_S, 0.25);
	m->ts = 1764115200.123456;
	size_t len = ipk_sample_format(m, line, sizeof(line));
	CHECK("fast format fits", len > 0 && len == strlen(line));
	cJSON *fj = cJSON_Parse(line);
	CHECK("fast format is valid JSON", fj != NULL);
	CHECK("fast format is a valid sample record", fj && ipk_record_validate(fj, &err) == 0);
	struct ipk_sample f2;
	CHECK("fast format parses back", fj && ipk_sample_from_json(fj, &f2, &err) == 0);
	CHECK("escaped session round trip", strcmp(f2.session, m->session) == 0);
	CHECK("mask round trip", f2.mask == m->mask);
	CHECK_NEAR("fraction to 1e-6", f2.val[IPK_F_MOUSE_PX], 1234.56789, 1e-9);
	CHECK_NEAR("big integer exact", f2.val[IPK_F_RX_BYTES], 123456789012345.0, 0);
	CHECK_NEAR("fraction", f2.val[IPK_F_CPU_S], 0.25, 0);
	CHECK_NEAR("timestamp to the microsecond", f2.ts, 1764115200.123456, 1e-6);
	CHECK("too small a buffer refused", ipk_sample_format(m, line, 100) == 0);
	cJSON_Delete(fj);
	char nb[32];
	nb[ipk_json_number(nb, 0.5e-7)] = 0;
	CHECK("tiny value rounds to 0", strcmp(nb, "0") == 0);
	nb[ipk_json_number(nb, 3e20)] = 0;
	CHECK("huge value in exponent form", strcmp(nb, "3e+20") == 0 || strcmp(nb, "300000000000000000000") == 0);
	nb[ipk_json_number(nb, NAN)] = 0;
	CHECK("NaN as null", strcmp(nb, "null") == 0);
	nb[ipk_json_number(nb, -0.25)] = 0;
	CHECK("negative fraction", strcmp(nb, "-0.25") == 0);

	cJSON_ReplaceItemInObject(j, "events", cJSON_CreateString("many"));
	CHECK("non-numeric field refused", ipk_sample_from_json(j, &back, &err) < 0 && strstr(err.msg, "'events'"));
	/* values outside ipkit-records(7): refused, naming the field */
	static const struct {
		const char *field, *json;
	} bad[] = {
		{ "events", "-1" }, { "cpu_s", "-0.25" }, { "cpu", "1.5" }, { "gpu", "2" }, { "interval", "0" },
		{ "interval", "-1" }, { "session", "\"\"" }, { "user", "5" }, { "host", "[]" }, { "sources", "\"x\"" },
		{ "sources", "[1]" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cJSON *o = ipk_sample_to_json(m);
		cJSON_DeleteItemFromObject(o, "events");
		cJSON_DeleteItemFromObject(o, bad[i].field);
		cJSON_AddItemToObject(o, bad[i].field, cJSON_Parse(bad[i].json));
		char want[64], name[96];
		snprintf(want, sizeof(want), "'%s'", bad[i].field);
		snprintf(name, sizeof(name), "%s %s refused, named", bad[i].field, bad[i].json);
		CHECK(name, ipk_sample_from_json(o, &back, &err) < 0 && strstr(err.msg, want));
		cJSON_Delete(o);
	}
	cJSON *edge = ipk_sample_to_json(m);
	cJSON_DeleteItemFromObject(edge, "cpu");
	cJSON_AddNumberToObject(edge, "cpu", 1);
	cJSON_DeleteItemFromObject(edge, "events");
	cJSON_AddNumberToObject(edge, "events", 0);
	CHECK("cpu 1 and events 0 accepted", ipk_sample_from_json(edge, &back, &err) == 0);
	cJSON_Delete(edge);
	cJSON_Delete(j);
	CHECK("field lookup", ipk_field_lookup("mouse_px") == IPK_F_MOUSE_PX && ipk_field_lookup("nope") == -1);
	ipk_sample_set_free(&set);
	CHECK_DONE();
}
