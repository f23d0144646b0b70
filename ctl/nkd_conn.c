// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The guest connection table: "nkctl conn list [vm NAME]".
 *
 * nkd keeps no copy of it.  On each request it asks every running NSM
 * (NSM_MSG_CONN_LIST, answered by CONN_BATCH packets and a REPLY) and
 * names each entry's VM by its id.  An NSM a VM is draining from (a
 * graceful move, nkd_move.c) is asked too, so a connection that finishes
 * on its old NSM is listed there, with that NSM's name.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "nkaddr.h"
#include "nkd.h"

int conn_collect(struct nkd_nsm *nsm, uint32_t vm_id, struct nsm_conn **out, size_t *n)
{
	static const struct nsm_listing ls = {
		NSM_MSG_CONN_LIST, NSM_MSG_CONN_BATCH, sizeof(struct nsm_conn), NSM_CONN_BATCH,
		NKD_CONN_LIST_MAX,
	};
	struct nsm_conn_list req = { .vm_id = vm_id };

	return nsm_collect(nsm, &ls, &req, sizeof(req), (void **)out, n);
}

static const char *conn_state_name(unsigned int s)
{
	switch (s) {
	case NK_STATE_SETUP:		return "setup";
	case NK_STATE_CONNECTING:	return "connecting";
	case NK_STATE_CONNECTED:	return "connected";
	case NK_STATE_LISTENING:	return "listening";
	case NK_STATE_CLOSED:		return "closed";
	default:			return "unknown";
	}
}

static json_t *addr_json(const struct nk_addr *a)
{
	char buf[NK_ADDRSTRLEN];

	if (a->family != NK_AF_INET && a->family != NK_AF_INET6)
		return json_null();
	return json_string(nk_addr_ntop_port(a, buf, sizeof(buf)));
}

static const char *vm_name_by_id(uint32_t id)
{
	struct nkd_vm *vm;

	for (vm = nkd.vms; vm; vm = vm->next)
		if (vm->id == id)
			return vm->name;
	return NULL;
}

json_t *conn_to_json(const struct nkd_nsm *nsm, const struct nsm_conn *c)
{
	const char *vm = vm_name_by_id(c->vm_id);
	char token[24];

	snprintf(token, sizeof(token), "%#llx", (unsigned long long)c->token);
	return json_pack("{s:o, s:i, s:s, s:s, s:o, s:o, s:s, s:I, s:I, s:s}",
			 "vm", vm ? json_string(vm) : json_null(), "vm_id", (int)c->vm_id,
			 "nsm", nsm->name, "proto", c->proto == NSM_CONN_UDP ? "udp" : "tcp",
			 "local", addr_json(&c->local), "remote", addr_json(&c->peer),
			 "state", conn_state_name(c->state),
			 "bytes_in", (json_int_t)c->bytes_in, "bytes_out", (json_int_t)c->bytes_out,
			 "token", token);
}

/* conn list [vm NAME]: every NSM that is running, in slot order. */
int conn_list(json_t *args, json_t **res, json_t *warnings, struct nkd_err *e)
{
	const char *name = json_string_value(json_object_get(args, "vm"));
	struct nkd_vm *vm = NULL;
	json_t *a;
	int i;

	if (name) {
		vm = vm_find(name);
		if (!vm)
			return nkd_fail(e, ENOENT, "conn list: vm %s does not exist (see 'nkctl vm list')",
					name);
	}
	a = json_array();
	for (i = 0; i < NKD_NSM_MAX; i++) {
		struct nkd_nsm *nsm = nkd.nsms[i];
		struct nsm_conn *v;
		size_t n, k;
		int ret;

		if (!nsm || nsm->dead)
			continue;
		if (vm && nsm != vm->nsm && !move_draining_on(vm, nsm))
			continue;
		if (nsm->state != NSM_RUNNING) {
			json_array_append_new(warnings, json_sprintf("nsm %s is %s; its connections are not listed",
								     nsm->name, nsm_state_name(nsm->state)));
			continue;
		}
		ret = conn_collect(nsm, vm ? vm->id : 0, &v, &n);
		if (ret == -ENOENT)
			continue;	/* the NSM does not have the VM (yet) */
		if (ret) {
			json_array_append_new(warnings, json_sprintf("nsm %s: connection list failed: %s",
								     nsm->name, strerror(-ret)));
			continue;
		}
		for (k = 0; k < n; k++)
			json_array_append_new(a, conn_to_json(nsm, &v[k]));
		free(v);
	}
	*res = a;
	return 0;
}
