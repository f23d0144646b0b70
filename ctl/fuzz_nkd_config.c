// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * libFuzzer harness: nkd's configuration parser (nkd.json, `nkd --config
 * FILE`, and the nsm/vm objects of nkctl's add requests).  The input is a
 * file's bytes.  jansson reads it (duplicate keys refused, as nkd reads its
 * files); what nkd's code does with the JSON is what is fuzzed: the top
 * level (state_check_top: keys, version, uplink, pin_dir, miss), every
 * entry of "nsms" (nsm_config_parse) and of "vms" (vm_config_parse, with
 * the NSMs parsed before it registered, so that a VM's nsm, id, cid and
 * uds checks are reached; not `nsm add`'s check of the namespace and
 * device, which runs commands).  Nothing is created: no NSM process, listener,
 * timer, map or namespace; the parsed NSMs are templates in a static
 * array and the parsed VMs a list freed after each input.  Every accepted
 * entry must read back within its bounds (checked here); a rejected one
 * must say why.  Built by `make` (clang, ASan + UBSan); run by
 * selftests/test_fuzz.sh with the harnesses of nk-vhost-vsock.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "nkd.h"

static bool verbose;	/* NK_FUZZ_VERBOSE=1: say what each entry came to */
static struct nkd_nsm nsm_tmpl[NKD_NSM_MAX];

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *v;

	(void)argc;
	(void)argv;
	/* as nkd's main() leaves them without options (the NSMs' control
	 * socket paths are checked against sun_path) */
	nkd.cfg.state_dir = NKD_DEFAULT_STATE_DIR;
	nkd.cfg.run_dir = NKD_DEFAULT_RUN_DIR;
	nkd.cfg.miss = -1;
	/* Nothing here reaches vm_create() or vsock_update(), the only
	 * AF_VSOCK users; this is a second guard. */
	nkd.cfg.no_vsock = true;
	v = getenv("NK_FUZZ_VERBOSE");
	verbose = v && !strcmp(v, "1");
	/* the refusals of mutated files would fill the log */
	nk_log_init("fuzz_nkd_config", verbose ? NK_LOG_ERR : NK_LOG_OFF);
	return 0;
}

static void check_nsm(const struct nkd_nsm *n)
{
	if (!memchr(n->name, 0, sizeof(n->name)) || !n->name[0] ||
	    !memchr(n->netns, 0, sizeof(n->netns)) || !memchr(n->dev, 0, sizeof(n->dev)) ||
	    n->slot < -1 || n->slot >= NKD_NSM_MAX || n->busy_poll_us > NSM_POLL_MAX_US ||
	    (n->bulk_poll_us > NSM_POLL_MAX_US && n->bulk_poll_us != NSM_BULK_POLL_AUTO) ||
	    n->notsent_lowat < 0 || n->notsent_lowat > NSM_NOTSENT_LOWAT_MAX ||
	    (n->kernel_relay_sndbuf && (n->kernel_relay_sndbuf < NSM_KRELAY_SNDBUF_MIN ||
					n->kernel_relay_sndbuf > NSM_KRELAY_SNDBUF_MAX)))
		abort();
}

static void check_vm(const struct nkd_vm *v)
{
	if (!memchr(v->name, 0, sizeof(v->name)) || !v->name[0] || !v->nsm ||
	    v->id < 1 || v->id > NKD_VM_ID_MAX || !v->naddrs || v->naddrs > NK_VM_ADDRS_MAX ||
	    !v->uds == !v->cid || (v->uds && v->uds[0] != '/'))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct nkd_err e = { "" };
	struct nkd_vm tmpl_vm, *vm;
	struct nkd_nsm t;
	json_error_t jerr;
	json_t *root, *o;
	size_t i;
	int slot;

	root = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		if (verbose)
			fprintf(stderr, "not JSON: line %d: %s\n", jerr.line, jerr.text);
		return 0;
	}
	if (state_check_top("fuzz", root))
		goto out;
	json_array_foreach(json_object_get(root, "nsms"), i, o) {
		e.msg[0] = 0;
		if (nsm_config_parse(o, &t, false, &e)) {
			if (!e.msg[0])
				abort();	/* a refusal says why */
			if (verbose)
				fprintf(stderr, "nsms[%zu]: %s\n", i, e.msg);
			continue;
		}
		check_nsm(&t);
		if (verbose)
			fprintf(stderr, "nsms[%zu]: nsm %s\n", i, t.name);
		for (slot = t.slot; slot < 0 || nkd.nsms[slot];)
			if (++slot >= NKD_NSM_MAX)
				break;
		if (slot >= NKD_NSM_MAX || nkd.nsms[slot])
			continue;
		nsm_tmpl[slot] = t;
		nsm_tmpl[slot].slot = slot;
		nkd.nsms[slot] = &nsm_tmpl[slot];
	}
	json_array_foreach(json_object_get(root, "vms"), i, o) {
		e.msg[0] = 0;
		if (vm_config_parse(o, &tmpl_vm, &e)) {
			if (!e.msg[0])
				abort();
			if (verbose)
				fprintf(stderr, "vms[%zu]: %s\n", i, e.msg);
			free(tmpl_vm.uds);
			continue;
		}
		check_vm(&tmpl_vm);
		if (verbose)
			fprintf(stderr, "vms[%zu]: vm %s (id %u)\n", i, tmpl_vm.name, tmpl_vm.id);
		vm = malloc(sizeof(*vm));
		if (!vm) {
			free(tmpl_vm.uds);
			break;
		}
		*vm = tmpl_vm;
		vm->next = nkd.vms;
		nkd.vms = vm;
		nkd.nvms++;
	}
out:
	while ((vm = nkd.vms)) {
		nkd.vms = vm->next;
		free(vm->uds);
		free(vm);
	}
	nkd.nvms = 0;
	memset(nkd.nsms, 0, sizeof(nkd.nsms));
	free((char *)nkd.cfg.uplink);
	free((char *)nkd.cfg.pin_dir);
	nkd.cfg.uplink = nkd.cfg.pin_dir = NULL;
	nkd.cfg.miss = -1;
	json_decref(root);
	return 0;
}
