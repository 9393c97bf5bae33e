/* url.h - checking a URL before anything is sent to it. */
#ifndef IPK_URL_H
#define IPK_URL_H

#include "ipk.h"

/* Returns 0 when url parses (libcurl's URL parser), its scheme is http or
 * https and it names a host; else -1 with err (IPK_EXIT_USAGE) saying
 * "invalid WHAT 'URL': reason" (what: e.g. "Prometheus URL"), or
 * IPK_EXIT_OSERR when out of memory. */
int ipk_url_check_http(const char *what, const char *url, struct ipk_err *err);

#endif
