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

	cJSON_ReplaceItemInObject(j, "events", cJSON_CreateString("many"));
	CHECK("non-numeric field refused", ipk_sample_from_json(j, &back, &err) < 0 && strstr(err.msg, "'events'"));
	cJSON_Delete(j);
	CHECK("field lookup", ipk_field_lookup("mouse_px") == IPK_F_MOUSE_PX && ipk_field_lookup("nope") == -1);
	ipk_sample_set_free(&set);
	CHECK_DONE();
}
