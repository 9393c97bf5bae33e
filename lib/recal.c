/* recal.c - online per-user recalibration. See recal.h. */
#include "recal.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

#define TEPS 1e-9        /* slack on timestamps compared after additions, as eval.c */
#define QUEUE_FIRST_CAP 32 /* predictions a queue makes room for at first, then doubles */

struct pending {
	double ts;
	uint16_t open;    /* bit k: window k not settled yet */
	uint16_t unknown; /* bit k: a sample in window k did not say its events */
};

/* A ring of predictions; entry i's logits are z[i * nwin ..], nwin fixed
 * at the first push (a session's windows are its model's). */
struct ipk_recal_queue {
	struct pending *v;
	float *z;
	int head, n, cap, nwin;
};

struct ipk_recal_queue *ipk_recal_queue_new(void)
{
	return calloc(1, sizeof(struct ipk_recal_queue));
}

void ipk_recal_queue_free(struct ipk_recal_queue *q)
{
	if (!q)
		return;
	free(q->v);
	free(q->z);
	free(q);
}

size_t ipk_recal_queue_bytes(int nwin, int entries)
{
	int cap = QUEUE_FIRST_CAP;
	while (cap < entries)
		cap *= 2;
	return sizeof(struct ipk_recal_queue) + (size_t)cap * (sizeof(struct pending) + sizeof(float) * nwin);
}

int ipk_recal_pending(const struct ipk_recal_queue *q)
{
	return q->n;
}

static void learn(struct ipk_calib *c, int k, float z, double y, double rate)
{
	double g = ipk_sigmoid(c->a[k] * z + c->b[k]) - y;
	c->b[k] -= rate * g;
	c->a[k] -= rate * g * z;
	c->labels[k] += 1;
}

/* Settle what the sample (ts, events) decides, oldest prediction first. */
static void settle(struct ipk_recal_queue *q, struct ipk_calib *c, double rate, double ts, float events)
{
	int kept = 0;
	for (int i = 0; i < q->n; i++) {
		int at = (q->head + i) % q->cap;
		struct pending *e = &q->v[at];
		for (int k = 0; k < c->nwin; k++) {
			unsigned bit = 1u << k;
			if (!(e->open & bit))
				continue;
			double end = e->ts + c->window[k];
			int y = -1; /* -1: still open; 2: settled without an outcome */
			if (ts <= end + TEPS) { /* the sample is inside the window */
				if (events > 0)
					y = 0;
				else if (events != events)
					e->unknown |= bit;
			}
			if (y < 0 && ts >= end - TEPS) /* the window is over */
				y = e->unknown & bit ? 2 : 1;
			if (y < 0)
				continue;
			e->open &= ~bit;
			if (y < 2)
				learn(c, k, q->z[(size_t)at * q->nwin + k], y, rate);
		}
		if (e->open) {
			int to = (q->head + kept++) % q->cap;
			q->v[to] = *e;
			memmove(q->z + (size_t)to * q->nwin, q->z + (size_t)at * q->nwin, sizeof(float) * q->nwin);
		}
	}
	q->n = kept;
}

static int push(struct ipk_recal_queue *q, const struct pending *e, const float *z, int nwin)
{
	if (!q->cap)
		q->nwin = nwin;
	if (q->n == q->cap) {
		int cap = q->cap ? q->cap * 2 : QUEUE_FIRST_CAP;
		struct pending *v = malloc(sizeof(*v) * cap);
		float *zz = malloc(sizeof(float) * (size_t)cap * q->nwin);
		if (!v || !zz) {
			free(v);
			free(zz);
			return -1;
		}
		for (int i = 0; i < q->n; i++) {
			int at = (q->head + i) % q->cap;
			v[i] = q->v[at];
			memcpy(zz + (size_t)i * q->nwin, q->z + (size_t)at * q->nwin, sizeof(float) * q->nwin);
		}
		free(q->v);
		free(q->z);
		q->v = v;
		q->z = zz;
		q->head = 0;
		q->cap = cap;
	}
	int at = (q->head + q->n) % q->cap;
	q->v[at] = *e;
	memcpy(q->z + (size_t)at * q->nwin, z, sizeof(float) * q->nwin);
	q->n++;
	return 0;
}

int ipk_recal_step(struct ipk_recal_queue *q, struct ipk_calib *c, double rate, double ts, float events, float *p)
{
	if (!c || !(rate > 0))
		return 0;
	settle(q, c, rate, ts, events);
	struct pending e = { .ts = ts, .open = (uint16_t)((1u << c->nwin) - 1) };
	float out[IPK_CALIB_MAX_WIN], z[IPK_CALIB_MAX_WIN];
	for (int k = 0; k < c->nwin; k++) {
		z[k] = (float)ipk_logit(p[k]);
		out[k] = (float)ipk_sigmoid(c->a[k] * z[k] + c->b[k]);
	}
	if (push(q, &e, z, c->nwin) < 0)
		return -1;
	memcpy(p, out, sizeof(float) * c->nwin);
	return 0;
}
