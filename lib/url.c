/* url.c - checking a URL before anything is sent to it. See url.h. */
#include "url.h"

#include <curl/curl.h>
#include <string.h>

int ipk_url_check_http(const char *what, const char *url, struct ipk_err *err)
{
	CURLU *u = curl_url();
	if (!u)
		return ipk_err_set(err, IPK_EXIT_OSERR, "out of memory");
	char *scheme = NULL, *host = NULL;
	CURLUcode rc = curl_url_set(u, CURLUPART_URL, url, 0);
	int ret = 0;
	if (rc != CURLUE_OK) {
		ret = ipk_err_set(err, IPK_EXIT_USAGE, "invalid %s '%s': %s", what, url, curl_url_strerror(rc));
	} else if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
		   (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0)) {
		ret = ipk_err_set(err, IPK_EXIT_USAGE, "invalid %s '%s': scheme must be http or https", what, url);
	} else if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || !*host) {
		ret = ipk_err_set(err, IPK_EXIT_USAGE, "invalid %s '%s': no host", what, url);
	}
	curl_free(scheme);
	curl_free(host);
	curl_url_cleanup(u);
	return ret;
}
