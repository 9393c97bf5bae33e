/* test-userhist: per-user gap histograms (bins, survival, hybrid-histogram
 * score against hand-computed values), the state directory (round trip,
 * merging what two tables observed, refusal of a foreign file) and the
 * user_* features. */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "feature.h"
#include "userhist.h"

int main(void)
{
	CHECK("bin of 1 s", ipk_hist_bin(1.0) == 1 && ipk_hist_bin(0.9999999) == 1 && ipk_hist_bin(3.4) == 3);
	CHECK("bin of 127 s", ipk_hist_bin(127.2) == 127);
	CHECK("log bins", ipk_hist_bin(128) == 128 && ipk_hist_bin(256) == 144 && ipk_hist_bin(1e9) == IPK_HIST_BINS - 1);
	CHECK("bin values inside their bins", ipk_hist_bin(ipk_hist_bin_value(130)) == 130 && ipk_hist_bin_value(5) == 5);

	struct ipk_hist h;
	memset(&h, 0, sizeof(h));
	CHECK("no gaps: survival NaN", isnan(ipk_hist_survival(&h, 1)) && isnan(ipk_hist_score(&h, 0, 5)));
	/* gaps 1, 1, 1, 2, 10, 40 */
	double g[] = { 1, 1, 1, 2, 10, 40 };
	for (int i = 0; i < 6; i++)
		ipk_hist_add_gap(&h, g[i]);
	CHECK_NEAR("S(0) = 1", ipk_hist_survival(&h, 0), 1.0, 1e-12);
	CHECK_NEAR("S(1) = 3/6", ipk_hist_survival(&h, 1), 0.5, 1e-12);
	CHECK_NEAR("S(5) = 2/6", ipk_hist_survival(&h, 5), 2.0 / 6, 1e-12);
	CHECK_NEAR("score(e=1, W=5) = S(6)/S(1) = 2/3", ipk_hist_score(&h, 1, 5), 2.0 / 3, 1e-12);
	CHECK_NEAR("score(e=10, W=30) = S(40)/S(10) = 0", ipk_hist_score(&h, 10, 30), 0.0, 1e-12);
	CHECK_NEAR("score past every gap = 1", ipk_hist_score(&h, 50, 5), 1.0, 1e-12);

	/* state directory: two tables loaded from the same file, each adding
	 * its own observations, merged without loss or double counting */
	char dir[] = "/tmp/test-userhist-XXXXXX";
	CHECK("temp dir", mkdtemp(dir) != NULL);
	struct ipk_err err = { 0 };
	struct ipk_histdb *a = ipk_histdb_new(), *b = ipk_histdb_new(), *c = ipk_histdb_new();
	CHECK("no user, no history", ipk_histdb_get(a, "") == NULL);
	struct ipk_hist *ha = ipk_histdb_get(a, "ann");
	ipk_hist_add_gap(ha, 3);
	ipk_hist_add_interval(ha, 1);
	CHECK("first sync", ipk_histdb_sync(a, dir, &err) == 0);
	CHECK("load into two tables", ipk_histdb_load(b, dir, &err) == 0 && ipk_histdb_load(c, dir, &err) == 0);
	CHECK("loaded counts", ipk_histdb_get(b, "ann")->gaps == 1 && ipk_histdb_get(b, "ann")->bin[3] == 1);
	ipk_hist_add_gap(ipk_histdb_get(b, "ann"), 7);
	ipk_hist_add_gap(ipk_histdb_get(c, "ann"), 7);
	ipk_hist_add_gap(ipk_histdb_get(c, "bob"), 500);
	ipk_hist_add_interval(ipk_histdb_get(c, "bob"), 0);
	CHECK("both sync", ipk_histdb_sync(b, dir, &err) == 0 && ipk_histdb_sync(c, dir, &err) == 0);
	CHECK("a sync with nothing new", ipk_histdb_sync(b, dir, &err) == 0);
	struct ipk_histdb *d = ipk_histdb_new();
	CHECK("load merged", ipk_histdb_load(d, dir, &err) == 0 && ipk_histdb_users(d) == 2);
	struct ipk_hist *ann = ipk_histdb_get(d, "ann"), *bob = ipk_histdb_get(d, "bob");
	CHECK("merged: 1 + 1 + 1 gaps, none twice", ann->gaps == 3 && ann->bin[3] == 1 && ann->bin[7] == 2);
	CHECK("merged: intervals", ann->intervals == 1 && ann->active == 1 && bob->intervals == 1 && bob->active == 0);
	CHECK("merged: log bin", bob->bin[ipk_hist_bin(500)] == 1 && bob->gaps == 1);
	CHECK("the syncing table holds the merged counts", ipk_histdb_get(c, "ann")->gaps == 3);
	char odd[64];
	memset(odd, 1, 63);
	odd[63] = 0;
	odd[0] = '"';
	odd[1] = '\\';
	ipk_hist_add_gap(ipk_histdb_get(c, odd), 2);
	struct ipk_histdb *o2 = ipk_histdb_new();
	CHECK("a user name that needs escaping round-trips",
	      ipk_histdb_sync(c, dir, &err) == 0 && ipk_histdb_load(o2, dir, &err) == 0 && ipk_histdb_get(o2, odd)->gaps == 1 &&
		      ipk_histdb_users(o2) == 3);
	ipk_histdb_free(o2);

	char path[256];
	snprintf(path, sizeof(path), "%s/history.jsonl", dir);
	FILE *f = fopen(path, "w");
	fputs("{\"type\":\"history\",\"v\":1,\"user\":\"x\",\"gaps\":1,\"intervals\":1,\"active\":1,\"bins\":[[999,1]]}\n", f);
	fclose(f);
	struct ipk_histdb *e = ipk_histdb_new();
	CHECK("bad bin refused", ipk_histdb_load(e, dir, &err) < 0 && err.code == IPK_EXIT_DATAERR &&
					 strstr(err.msg, "line 1: bad bin"));
	f = fopen(path, "w");
	fputs("not json\n", f);
	fclose(f);
	CHECK("not JSON refused, also by sync", ipk_histdb_sync(c, dir, &err) < 0 && err.code == IPK_EXIT_DATAERR);
	unlink(path);
	snprintf(path, sizeof(path), "%s/history.lock", dir);
	unlink(path);
	rmdir(dir);

	/* features: masked without a history, from the user's gaps with one */
	struct ipk_feat_state *st = ipk_feat_new();
	struct ipk_hist uh;
	memset(&uh, 0, sizeof(uh));
	struct ipk_sample s;
	float raw[IPK_FEAT_COUNT];
	int ev[] = { 5, 0, 0, 4, 0, 0, 0, 3, 0 };
	for (int t = 0; t < 9; t++) {
		ipk_sample_init(&s, "u/s", "test", 100 + t, 1);
		ipk_sample_set_field(&s, IPK_F_EVENTS, ev[t]);
		ipk_sample_set_field(&s, IPK_F_CLICKS, t == 0);
		ipk_feat_step(st, &s, &uh, raw);
	}
	/* gaps 3 (t=0 -> 3) and 4 (t=3 -> 7); idle 1 at the end */
	CHECK("history counted the closed gaps", uh.gaps == 2 && uh.bin[3] == 1 && uh.bin[4] == 1);
	CHECK("history counted the intervals", uh.intervals == 9 && uh.active == 3);
	CHECK_NEAR("user_surv_5 = S(6)/S(1) = 0", raw[IPK_FT_U_SURV5], 0.0, 1e-6);
	CHECK_NEAR("user_active_frac", raw[IPK_FT_U_ACTIVE], 3.0 / 9, 1e-6);
	CHECK_NEAR("user_log_gaps", raw[IPK_FT_U_GAPS], log1p(2.0), 1e-6);
	CHECK_NEAR("log_since_click_s: 8 s", raw[IPK_FT_SINCE_CLICK], log1p(8.0), 1e-6);
	CHECK("log_since_key_s masked without keys", isnan(raw[IPK_FT_SINCE_KEY]));
	CHECK_NEAR("gaps_60s: 3 gaps began", raw[IPK_FT_GAPS_60S], 3.0, 1e-6);
	CHECK_NEAR("log_burst_s idle: 0", raw[IPK_FT_BURST], 0.0, 1e-6);
	ipk_feat_free(st);
	st = ipk_feat_new();
	ipk_sample_init(&s, "u/s", "test", 1, 1);
	ipk_sample_set_field(&s, IPK_F_EVENTS, 2);
	ipk_feat_step(st, &s, NULL, raw);
	CHECK("no history: user features masked",
	      isnan(raw[IPK_FT_U_SURV5]) && isnan(raw[IPK_FT_U_GAPS]) && isnan(raw[IPK_FT_U_ACTIVE]));
	s.ts = 2;
	ipk_feat_step(st, &s, NULL, raw);
	CHECK_NEAR("log_burst_s: two active intervals", raw[IPK_FT_BURST], log1p(2.0), 1e-6);
	ipk_feat_free(st);
	ipk_histdb_free(a);
	ipk_histdb_free(b);
	ipk_histdb_free(c);
	ipk_histdb_free(d);
	ipk_histdb_free(e);
	CHECK_DONE();
}
