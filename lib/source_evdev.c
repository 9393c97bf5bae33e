/* PLACEHOLDER: replaced by the real implementation before this lands. */
#include "sources.h"
struct ipk_source *ipk_source_evdev_new(const struct ipk_evdev_opts *o, struct ipk_err *err)
{
	(void)o;
	ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "source 'evdev' is not built yet");
	return NULL;
}
