/* check.h - the C unit tests' harness: prints the same "ok NAME" /
 * "not ok NAME: why" lines as the shell tests, counted by tests/run.sh. */
#ifndef IPK_CHECK_H
#define IPK_CHECK_H

#include <math.h>
#include <stdio.h>
#include <string.h>

static int check_failures;

#define CHECK(name, cond)                                                                    \
	do {                                                                                 \
		if (cond) {                                                                  \
			printf("ok %s\n", name);                                             \
		} else {                                                                     \
			printf("not ok %s: %s (%s:%d)\n", name, #cond, __FILE__, __LINE__); \
			check_failures++;                                                    \
		}                                                                            \
		fflush(stdout);                                                              \
	} while (0)

#define CHECK_NEAR(name, a, b, tol)                                                                     \
	do {                                                                                            \
		double check_a_ = (a), check_b_ = (b);                                                  \
		if (fabs(check_a_ - check_b_) <= (tol)) {                                               \
			printf("ok %s\n", name);                                                        \
		} else {                                                                                \
			printf("not ok %s: %.9g vs %.9g (%s:%d)\n", name, check_a_, check_b_, __FILE__, \
			       __LINE__);                                                               \
			check_failures++;                                                               \
		}                                                                                       \
		fflush(stdout);                                                                         \
	} while (0)

#define SKIP(name, reason) printf("skip %s: %s\n", name, reason)

#define CHECK_DONE() return 0 /* failures are counted from the lines */

#endif
