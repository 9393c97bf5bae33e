/* PLACEHOLDER: replaced by the real implementation before this lands. */
#include "sources.h"
struct ipk_source *ipk_source_nvml_new(const struct ipk_nvml_opts *o, struct ipk_err *err)
{
	(void)o;
	ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "source 'nvml' is not built yet");
	return NULL;
}
