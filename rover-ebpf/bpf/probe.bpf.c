/* probe.bpf.c: programs that do nothing, for rover-core's feature probes
 * where aya has none of the kind rover uses. aya probes the tracing
 * program type with an fentry program, which some kernels refuse where
 * tp_btf works (this project's CI kernel returns EPERM for fentry), so
 * tp_btf is probed by loading and attaching this on sched_switch. */
#include "kernel.h"
#include <bpf/bpf_helpers.h>

SEC("tp_btf/sched_switch")
int rover_probe_tp_btf(void *ctx)
{
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
