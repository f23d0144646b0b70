// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * nkd's persistent configuration: STATE-DIR/nkd.json, rewritten atomically
 * (temporary file, fsync, rename) after every change, and read back at
 * start-up; --config FILE uses the same schema (docs/cli.md):
 *
 *   {"version": 1,
 *    "uplink": "IFNAME", "miss": "pass" | "drop", "pin_dir": "DIR",
 *    "nsms": [{"name", "id", "type", "netns", "dev", "relay", "busy_poll", "bulk_poll",
 *              "kernel_relay_sndbuf"}],
 *    "vms":  [{"name", "id", "nsm", "addrs": [...], "uds" | "cid", "gw": [...]}],
 *    "draining": [{"vm", "nsm"}]}
 *
 * ("draining": VMs whose connections still finish on an old NSM after a
 * graceful move, nkd_move.c; written by nkd only, absent when none.)
 *
 * (an NSM nkd created on the uplink has no netns/dev).  The steering keys
 * are overridden by nkd's --uplink, --miss and --pin-dir.
 *
 * Loading is two-phase: every entry is validated and registered first
 * (state_load: any error makes nkd refuse to start and say which entry is
 * wrong; nothing was started); then steering starts (steer_start) and
 * listeners are created and NSMs adopted or spawned (state_apply).  A
 * failure in that phase (a netns that is gone, a directory that is
 * missing) leaves the object configured and marked failed, so the
 * configuration is never silently lost.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "nkaddr.h"
#include "nkd.h"

/* "draining" of the file read at start, resumed once NSMs are up. */
static json_t *restore_drains;

int state_save(void)
{
	char path[PATH_MAX], tmp[PATH_MAX + 8];
	json_t *root, *nsms, *vms, *drains;
	struct nkd_vm *vm;
	int fd, i, ret = 0;

	nsms = json_array();
	for (i = 0; i < NKD_NSM_MAX; i++)
		if (nkd.nsms[i] && !nkd.nsms[i]->dead)
			json_array_append_new(nsms, nsm_to_json(nkd.nsms[i], false));
	vms = json_array();
	for (vm = nkd.vms; vm; vm = vm->next)
		json_array_append_new(vms, vm_to_json(vm, false));
	root = json_pack("{s:i}", "version", 1);
	if (nkd.cfg.uplink) {
		json_object_set_new(root, "uplink", json_string(nkd.cfg.uplink));
		json_object_set_new(root, "miss", json_string(steer_miss_name(nkd.cfg.miss)));
		json_object_set_new(root, "pin_dir", json_string(nkd.cfg.pin_dir ?
				    nkd.cfg.pin_dir : NK_STEER_PIN_DIR));
	}
	json_object_set_new(root, "nsms", nsms);
	json_object_set_new(root, "vms", vms);
	drains = move_to_json();
	if (json_array_size(drains))
		json_object_set_new(root, "draining", drains);
	else
		json_decref(drains);

	snprintf(path, sizeof(path), "%s/%s", nkd.cfg.state_dir, NKD_STATE_FILE);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		ret = -errno;
		goto out;
	}
	if (json_dumpfd(root, fd, JSON_INDENT(2)) < 0 || write(fd, "\n", 1) != 1) {
		ret = errno ? -errno : -EIO;
		close(fd);
		goto out_unlink;
	}
	if (fsync(fd) < 0 || close(fd) < 0) {
		ret = -errno;
		goto out_unlink;
	}
	if (rename(tmp, path) < 0) {
		ret = -errno;
		goto out_unlink;
	}
	debug("state saved to %s", path);
	json_decref(root);
	return 0;

out_unlink:
	unlink(tmp);
out:
	err("cannot write the state file %s: %s; the running configuration is not persisted",
	    path, strerror(-ret));
	json_decref(root);
	return ret;
}

static int check_top(const char *path, json_t *root)
{
	const char *key;
	json_t *val;

	if (!json_is_object(root)) {
		err("%s: expected a JSON object {\"nsms\": [...], \"vms\": [...]}", path);
		return -EINVAL;
	}
	json_object_foreach(root, key, val) {
		if (!strcmp(key, "version")) {
			if (json_integer_value(val) != 1 || !json_is_integer(val)) {
				err("%s: unsupported version (this nkd reads version 1)", path);
				return -EINVAL;
			}
		} else if (!strcmp(key, "nsms") || !strcmp(key, "vms") || !strcmp(key, "draining")) {
			if (!json_is_array(val)) {
				err("%s: \"%s\" must be a list", path, key);
				return -EINVAL;
			}
		} else if (!strcmp(key, "uplink") || !strcmp(key, "pin_dir")) {
			if (!json_is_string(val) && !json_is_null(val)) {
				err("%s: \"%s\" must be a string", path, key);
				return -EINVAL;
			}
		} else if (!strcmp(key, "miss")) {
			if (!json_is_string(val) || (strcmp(json_string_value(val), "pass") &&
						     strcmp(json_string_value(val), "drop"))) {
				err("%s: \"miss\" must be \"pass\" or \"drop\"", path);
				return -EINVAL;
			}
		} else {
			err("%s: unknown key \"%s\" (expected version, uplink, miss, pin_dir, nsms, vms, draining)",
			    path, key);
			return -EINVAL;
		}
	}
	return 0;
}

/* The steering keys, unless the command line gave them. */
static int steer_keys(const char *path, json_t *root)
{
	const char *s;

	s = json_string_value(json_object_get(root, "uplink"));
	if (s && !nkd.cfg.uplink_cmdline) {
		if (!*s || strlen(s) >= IFNAMSIZ) {
			err("%s: \"uplink\" is not an interface name", path);
			return -EINVAL;
		}
		nkd.cfg.uplink = strdup(s);
	}
	s = json_string_value(json_object_get(root, "pin_dir"));
	if (s && !nkd.cfg.pin_dir_cmdline) {
		if (s[0] != '/') {
			err("%s: \"pin_dir\" must be an absolute path", path);
			return -EINVAL;
		}
		nkd.cfg.pin_dir = strdup(s);
	}
	s = json_string_value(json_object_get(root, "miss"));
	if (s && nkd.cfg.miss < 0)
		nkd.cfg.miss = strcmp(s, "drop") ? NK_MISS_PASS : NK_MISS_DROP;
	return 0;
}

/* The top level of a configuration (nkd.json schema): its keys and the
 * steering settings.  0 or -EINVAL (logged). */
int state_check_top(const char *path, json_t *root)
{
	int ret = check_top(path, root);

	return ret ? ret : steer_keys(path, root);
}

/*
 * The ids nkd.json gives the VMs of vms that have none in FILE, as
 * {name: id}; each reserved (vm_id_reserve()) until its VM takes it.
 */
static json_t *prev_vm_ids(json_t *vms)
{
	char path[PATH_MAX];
	json_t *root, *prev = json_object(), *o, *p;
	size_t i, j;

	snprintf(path, sizeof(path), "%s/%s", nkd.cfg.state_dir, NKD_STATE_FILE);
	if (access(path, F_OK) < 0)
		return prev;
	root = json_load_file(path, JSON_REJECT_DUPLICATES, NULL);
	if (!root)
		warn("%s unreadable: the vms of the configuration without an id are numbered anew",
		     path);
	json_array_foreach(json_object_get(root, "vms"), i, p) {
		const char *n = json_string_value(json_object_get(p, "name"));
		json_t *id = json_object_get(p, "id"), *x;
		bool explicit = false;

		if (!n || !json_is_integer(id) || json_integer_value(id) < 1 ||
		    json_integer_value(id) > NKD_VM_ID_MAX)
			continue;
		/* an id FILE gives a VM itself is that VM's */
		json_array_foreach(vms, j, o)
			if ((x = json_object_get(o, "id")) && json_is_integer(x) &&
			    json_integer_value(x) == json_integer_value(id))
				explicit = true;
		if (explicit)
			continue;
		json_array_foreach(vms, j, o) {
			const char *m = json_string_value(json_object_get(o, "name"));

			if (m && !strcmp(m, n) && !json_object_get(o, "id")) {
				json_object_set(prev, n, id);
				vm_id_reserve(json_integer_value(id), true);
				break;
			}
		}
	}
	json_decref(root);
	return prev;
}

/*
 * Parse VM entry o; when it gives no id itself and id > 0, with that id
 * (the one nkd.json, the VM's earlier self or its NSM knows it by), and
 * as it is if that id is taken.  tmpl->uds is allocated on success.
 */
static int vm_parse_with_id(json_t *o, json_int_t id, struct nkd_vm *tmpl, struct nkd_err *e)
{
	json_t *with_id;
	int ret;

	if (id <= 0 || json_object_get(o, "id"))
		return vm_config_parse(o, tmpl, e);
	with_id = json_deep_copy(o);
	json_object_set_new(with_id, "id", json_integer(id));
	ret = vm_config_parse(with_id, tmpl, e);
	json_decref(with_id);
	return ret ? vm_config_parse(o, tmpl, e) : 0;
}

static void prev_vm_ids_free(json_t *prev)
{
	const char *k;
	json_t *v;

	json_object_foreach(prev, k, v) {
		vm_id_reserve(json_integer_value(v), false);
	}
	json_decref(prev);
}

int state_load(const char *path, bool required)
{
	struct nkd_err e = { "" };
	json_t *root, *nsms, *vms, *o, *prev = NULL;
	struct nkd_nsm tmpl_nsm, *nsm;
	struct nkd_vm tmpl_vm, *vm;
	json_error_t jerr;
	size_t i;
	int ret;

	if (!required && access(path, F_OK) < 0 && errno == ENOENT) {
		info("no state file %s; starting with an empty configuration", path);
		return 0;
	}
	root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		if (jerr.line > 0)
			err("%s:%d: %s; fix the file or move it away", path, jerr.line, jerr.text);
		else
			err("%s: %s", path, jerr.text);
		return -EINVAL;
	}
	ret = state_check_top(path, root);
	if (ret)
		goto out;
	nsms = json_object_get(root, "nsms");
	vms = json_object_get(root, "vms");

	/* Phase 1: validate and register; nothing is started yet.  nkd.json
	 * (not --config FILE) may be an older nkd's: rules newer than it warn
	 * instead of keeping nkd down. */
	nkd.restoring = !required;
	json_array_foreach(nsms, i, o) {
		ret = nsm_config_parse(o, &tmpl_nsm, false, &e);
		if (!ret)
			ret = nsm_create(&tmpl_nsm, false, &nsm, &e);
		if (ret) {
			err("%s: nsms[%zu]: %s", path, i, e.msg);
			goto out;
		}
	}
	/* --config FILE: a VM without an id keeps the one it had (nkd.json):
	 * the NSMs know it by that id, and a VM that gets another one is a new
	 * VM to its NSM (its connections end) */
	if (required)
		prev = prev_vm_ids(vms);
	json_array_foreach(vms, i, o) {
		const char *name = json_string_value(json_object_get(o, "name"));
		json_int_t pid = name ? json_integer_value(json_object_get(prev, name)) : 0;

		vm_id_reserve(pid, false);	/* its own */
		ret = vm_parse_with_id(o, pid, &tmpl_vm, &e);
		if (!ret)
			ret = vm_create(&tmpl_vm, false, &vm, &e);
		free(tmpl_vm.uds);
		if (ret) {
			err("%s: vms[%zu]: %s", path, i, e.msg);
			goto out;
		}
	}

	json_decref(restore_drains);
	restore_drains = json_incref(json_object_get(root, "draining"));
	ret = 0;
out:
	nkd.restoring = false;
	prev_vm_ids_free(prev);
	json_decref(root);
	return ret;
}

/*
 * --config FILE: the drains are nkd's own state, which nkd writes into
 * STATE-DIR/nkd.json only: that file's list wins over one in FILE (a copy
 * of an older nkd.json).  A missing or unreadable file only costs the
 * drains (logged).
 */
void state_load_drains(const char *path)
{
	json_error_t jerr;
	json_t *root, *d;

	if (access(path, F_OK) < 0 && errno == ENOENT)
		return;
	root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		warn("%s: %s; drains of moved VMs are not resumed", path, jerr.text);
		return;
	}
	d = json_object_get(root, "draining");
	json_decref(restore_drains);
	restore_drains = json_is_array(d) ? json_incref(d) : NULL;
	json_decref(root);
}

/* A drain nkd.json lists that state_apply() has not resumed yet: VM vm
 * draining from NSM nsm (nsm_prune_strays() must leave it). */
bool state_drain_pending(const char *vm, const char *nsm)
{
	json_t *o;
	size_t i;

	json_array_foreach(restore_drains, i, o) {
		const char *v = json_string_value(json_object_get(o, "vm"));
		const char *n = json_string_value(json_object_get(o, "nsm"));

		if (v && n && !strcmp(v, vm) && !strcmp(n, nsm))
			return true;
	}
	return false;
}

void state_apply(const char *path)
{
	struct nkd_err e = { "" };
	unsigned int n_nsm = 0;
	struct nkd_vm *vm;
	bool spared;
	int i, ret;

	/* Listeners first, so that adopted NSMs get them now. */
	for (vm = nkd.vms; vm; vm = vm->next)
		if (vm_open_listener(vm, &e))
			err("%s (the vm stays configured but is not served)", e.msg);
	ret = vsock_update();
	if (ret)
		err("vsock: cannot serve cid vms: %s", strerror(-ret));
	for (i = 0; i < NKD_NSM_MAX; i++) {
		if (!nkd.nsms[i] || nkd.nsms[i]->dead)
			continue;
		n_nsm++;
		nsm_start(nkd.nsms[i], &e);	/* logs; a failure leaves it "failed" */
	}
	steer_sync();	/* the VMs' entries; stale ones removed */
	if (restore_drains && nkd.steer)
		move_restore(restore_drains);
	move_steer_sync();
	spared = json_array_size(restore_drains) > 0;
	json_decref(restore_drains);
	restore_drains = NULL;
	/* a VM nsm_start() spared for a drain nkd.json listed, which was not
	 * resumed (no uplink now, or it failed): no one else deletes it */
	for (i = 0; spared && i < NKD_NSM_MAX; i++)
		if (nkd.nsms[i] && !nkd.nsms[i]->dead && nkd.nsms[i]->adopted)
			nsm_prune_strays(nkd.nsms[i]);
	if (path)
		info("configuration from %s: %u nsms, %u vms", path, n_nsm, nkd.nvms);
}

/* ---- SIGHUP with --config: apply the file's difference ---- */

/* The VM's addresses, gateways and transport as the template t (its
 * entry, parsed) gives them?  Its nsm and policy change in place. */
static bool vm_same_config(const struct nkd_vm *vm, const struct nkd_vm *t)
{
	uint32_t i;

	if (t->naddrs != vm->naddrs)
		return false;
	for (i = 0; i < vm->naddrs; i++)
		if (!nk_addr_same_ip(&t->addrs[i].addr, &vm->addrs[i].addr) ||
		    t->addrs[i].prefix != vm->addrs[i].prefix)
			return false;
	if (t->gw4.family != vm->gw4.family || t->gw6.family != vm->gw6.family ||
	    (t->gw4.family && !nk_addr_same_ip(&t->gw4, &vm->gw4)) ||
	    (t->gw6.family && !nk_addr_same_ip(&t->gw6, &vm->gw6)))
		return false;
	if (!t->uds != !vm->uds || (t->uds && strcmp(t->uds, vm->uds)))
		return false;
	return t->cid == vm->cid;
}

/* A VM a reload deletes to add it again, as it was (its template for
 * vm_create()).  Returns 0, or -ENOMEM: not kept. */
static int saved_add(struct nkd_vm **saved, size_t *n, const struct nkd_vm *vm)
{
	struct nkd_vm *s = realloc(*saved, (*n + 1) * sizeof(**saved));

	if (!s)
		return -ENOMEM;
	*saved = s;
	s[*n] = *vm;
	s[*n].uds = vm->uds ? strdup(vm->uds) : NULL;
	if (vm->uds && !s[*n].uds)
		return -ENOMEM;
	s[*n].listen_path = NULL;
	s[*n].listen_fd = -1;
	s[*n].next = NULL;
	s[*n].error[0] = '\0';
	(*n)++;
	return 0;
}

static const struct nkd_vm *saved_find(const struct nkd_vm *saved, size_t n, const char *name)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (!strcmp(saved[i].name, name))
			return &saved[i];
	return NULL;
}

/* Two entries of one array with the same name: the file is refused, as it
 * is at start. */
static json_t *entry_named(json_t *arr, const char *name);

static const char *dup_name(json_t *arr)
{
	json_t *o;
	size_t i;

	json_array_foreach(arr, i, o) {
		const char *n = json_string_value(json_object_get(o, "name"));

		if (n && entry_named(arr, n) != o)
			return n;	/* an earlier entry has it */
	}
	return NULL;
}

/* json_equal, except that a number given as its decimal string ("30", as
 * nkctl sends busy_poll) equals that number (as nkd writes it). */
static bool same_value(json_t *a, json_t *b)
{
	const char *s = json_string_value(b);
	char *end;
	long long v;

	if (json_is_integer(a) && s && *s) {
		v = strtoll(s, &end, 10);
		return !*end && v == json_integer_value(a);
	}
	return json_equal(a, b);
}

static json_t *entry_named(json_t *arr, const char *name)
{
	json_t *o;
	size_t i;

	json_array_foreach(arr, i, o) {
		const char *n = json_string_value(json_object_get(o, "name"));

		if (n && !strcmp(n, name))
			return o;
	}
	return NULL;
}

/*
 * An NSM of the reloaded file that is already running: say which of its
 * settings the file changes, since they are not applied to a running NSM.
 * A setting the file leaves out means its default, as it does for `nsm
 * add`; null is refused, as it is when an NSM starts.  type is required
 * anyway, and netns/dev are left out for an NSM nkd created itself
 * (nk-NAME, eth0), which then has none to compare.
 */
static void nsm_reload_diff(struct nkd_nsm *nsm, json_t *o, const char *path)
{
	static const struct {
		const char *key;
		bool has_default;	/* left out: nsm_defaults()'s value */
		bool reported;		/* in what the NSM reports (run_to_json()) */
	} keys[] = {
		{ "id", false, false },
		{ "type", false, false }, { "netns", false, false }, { "dev", false, true },
		{ "relay", true, true }, { "busy_poll", true, true }, { "bulk_poll", true, true },
		{ "kernel_relay_sndbuf", true, true }, { "notsent_lowat", true, true },
	};
	struct nkd_nsm d;
	json_t *cur = nsm_to_json(nsm, false), *dflts, *run;
	size_t j;

	nsm_defaults(&d);
	dflts = nsm_to_json(&d, false);
	/* "running": what the process reported, where it did */
	run = nsm->run_known ? run_to_json(nsm) : NULL;
	for (j = 0; j < sizeof(keys) / sizeof(keys[0]); j++) {
		json_t *have = json_object_get(cur, keys[j].key), *want = json_object_get(o, keys[j].key);
		bool dflt = false, unsaid = false;
		char *a, *b;

		if (json_is_null(want)) {
			/* refused when an NSM starts: no default either */
			warn("SIGHUP: nsm %s: %s is null in %s, which is not a value (leave it out for the default); not applied",
			     nsm->name, keys[j].key, path);
			continue;
		}
		if (!want && keys[j].has_default) {
			want = json_object_get(dflts, keys[j].key);
			dflt = true;
		}
		/* type is required anyway; netns/dev left out match only an
		 * NSM nkd created itself, which has none to compare; an id left
		 * out is the one nkd gave it */
		if (want ? same_value(have, want) :
			   !have || !strcmp(keys[j].key, "type") || !strcmp(keys[j].key, "id"))
			continue;
		a = want ? json_dumps(want, JSON_ENCODE_ANY) : NULL;
		if (json_object_get(run, keys[j].key))
			have = json_object_get(run, keys[j].key);
		else if (run && keys[j].reported)
			unsaid = true;	/* an nk-nsm from before the setting */
		b = have ? json_dumps(have, JSON_ENCODE_ANY) : NULL;
		/* what "auto" chose is a number: say it was auto's choice */
		if (b && !strcmp(keys[j].key, "bulk_poll") &&
		    json_is_true(json_object_get(run, "bulk_poll_auto"))) {
			char *t = NULL;

			if (asprintf(&t, "\"auto\": %s", b) >= 0) {
				free(b);
				b = t;
			}
		}
		warn("SIGHUP: nsm %s: %s changed in %s (%s%s; running: %s); not applied (delete and add it again)",
		     nsm->name, keys[j].key, path, want ? (a ? a : "?") : "left out",
		     dflt ? ", the default, as it is left out" : "",
		     unsaid ? "not reported by this nk-nsm" : b ? b : "set by nkd");
		free(a);
		free(b);
	}
	json_decref(run);
	json_decref(dflts);
	json_decref(cur);
}

/*
 * Re-read --config FILE and apply what changed: VMs and NSMs that are gone
 * are deleted (VMs first), new NSMs are started, new VMs added, a VM whose
 * nsm changed is moved (gracefully where it can be), a VM whose addresses,
 * gateways, transport or id (one the file gives) changed is deleted and
 * added again (its connections end).  An NSM whose settings changed is
 * left as it is, with a warning (nsm_reload_diff): delete it and add it
 * again.  An entry that
 * fails is logged and skipped, and the VM it names stays as it is; the
 * rest still applies; a file naming a VM or NSM twice is not applied; the
 * file is never rewritten.
 */
void state_reload(void)
{
	const char *path = nkd.cfg.config_file;
	unsigned int added = 0, removed = 0, changed = 0;
	json_t *root, *nsms, *vms, *o, *readd, *keep, *adopted_ids;
	bool adopted[NKD_NSM_MAX] = { false };	/* NSMs step 2 adopted */
	struct nkd_vm *saved = NULL;
	size_t nsaved = 0;
	char pfx[NK_NAME_MAX + 8];
	const char *dup;
	struct nkd_err e = { "" };
	struct nkd_vm *vm, *next;
	json_error_t jerr;
	size_t i;
	int k;

	if (!path)
		return;
	root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		err("SIGHUP: %s:%d: %s; the configuration stays as it is", path, jerr.line, jerr.text);
		return;
	}
	if (check_top(path, root)) {
		err("SIGHUP: %s not applied; the configuration stays as it is", path);
		json_decref(root);
		return;
	}
	nsms = json_object_get(root, "nsms");
	vms = json_object_get(root, "vms");
	if ((dup = dup_name(vms)) || (dup = dup_name(nsms))) {
		err("SIGHUP: %s names %s twice; not applied, the configuration stays as it is",
		    path, dup);
		json_decref(root);
		return;
	}
	readd = json_object();	/* VMs deleted to be added again: "changed" */
	keep = json_object();	/* VMs whose entry is invalid: left as they are */
	adopted_ids = json_object();	/* the VMs of NSMs step 2 adopted: {name: id} */

	/* 1. VMs gone */
	for (vm = nkd.vms; vm; vm = next) {
		next = vm->next;
		if (entry_named(vms, vm->name))
			continue;
		if (vm_delete(vm, &e)) {
			err("SIGHUP: %s", e.msg);
			continue;
		}
		removed++;
	}
	/* 2. new NSMs */
	json_array_foreach(nsms, i, o) {
		struct nkd_nsm tmpl, *nsm;
		const char *name = json_string_value(json_object_get(o, "name"));
		int ret;

		if (name && (nsm = nsm_find(name))) {
			/* a running NSM's settings are not applied, but an
			 * entry nkd would refuse at start is said so */
			if (nsm_config_check(o, nsm, &e))
				err("SIGHUP: %s: nsms[%zu]: %s; the nsm stays as it is (nkd would refuse this file at start)",
				    path, i, e.msg);
			nsm_reload_diff(nsm, o, path);
			continue;
		}
		nkd.reloading = true;
		ret = nsm_config_parse(o, &tmpl, true, &e) || nsm_create(&tmpl, true, &nsm, &e);
		nkd.reloading = false;
		if (ret) {
			err("SIGHUP: %s: nsms[%zu]: %s", path, i, e.msg);
			continue;
		}
		added++;
		/* one an earlier nkd left running: the VMs the file puts on it
		 * get the ids it knows them by (their connections stay) */
		if (nsm->adopted && nsm->state == NSM_RUNNING) {
			json_t *ids = nsm_vm_ids(nsm);

			if (ids) {
				json_object_update(adopted_ids, ids);
				json_decref(ids);
			}
			adopted[nsm->slot] = true;
		}
	}
	/* 3. VMs changed other than by their nsm (policy and nsm change in
	 * place, below): deleted, to be added again, once their entry is
	 * known to be valid in place of what they are; an invalid entry
	 * leaves its VM as it is (nkd would refuse the file at start) */
	for (vm = nkd.vms; vm; vm = next) {
		struct nkd_vm tmpl;
		bool same;

		next = vm->next;
		o = entry_named(vms, vm->name);
		if (!o)
			continue;
		if (vm_config_parse_for(o, vm, &tmpl, &e)) {
			/* the parser names the vm, but not for every error */
			snprintf(pfx, sizeof(pfx), "vm %s: ", vm->name);
			err("SIGHUP: %s: %s%s; the vm stays as it is (nkd would refuse this file at start)",
			    path, strncmp(e.msg, pfx, strlen(pfx)) ? pfx : "", e.msg);
			json_object_set_new(keep, vm->name, json_true());
			continue;
		}
		/* an id the file gives is the VM's (an id left out keeps the
		 * one the VM has) */
		same = vm_same_config(vm, &tmpl) &&
		       (!json_object_get(o, "id") || tmpl.id == vm->id);
		free(tmpl.uds);
		if (same)
			continue;
		if (tmpl.id != vm->id && json_object_get(o, "id"))
			info("SIGHUP: vm %s: id %u in %s (it has %u): deleted and added again",
			     vm->name, tmpl.id, path, vm->id);
		/* what it was, if its entry fails to add below; its id stays
		 * free for it until step 4 is over */
		if (saved_add(&saved, &nsaved, vm))
			warn("SIGHUP: vm %s: out of memory; it cannot come back if its new entry fails",
			     vm->name);
		else
			vm_id_reserve(vm->id, true);
		json_object_set_new(readd, vm->name, json_true());
		if (vm_delete(vm, &e)) {
			err("SIGHUP: %s", e.msg);
			continue;
		}
		changed++;
	}
	/* 4. new (or re-added) VMs, and moves */
	json_array_foreach(vms, i, o) {
		const char *name = json_string_value(json_object_get(o, "name"));
		const char *to = json_string_value(json_object_get(o, "nsm"));
		const struct nkd_vm *old;
		struct nkd_vm tmpl;
		struct nkd_nsm *nsm;
		int ret;

		if (name && json_object_get(keep, name))
			continue;
		vm = name ? vm_find(name) : NULL;
		if (vm) {
			bool drop_all;
			int touched = 0;

			nsm = to ? nsm_find(to) : NULL;
			if (!nsm) {
				err("SIGHUP: %s: vms[%zu]: nsm %s does not exist", path, i, to ? to : "?");
				continue;
			}
			/* its policy, in place (connections stay), before a move */
			if (vm_policy_parse(vm->name, json_object_get(o, "policy"), &drop_all, &e))
				err("SIGHUP: %s: vms[%zu]: %s", path, i, e.msg);
			else if ((touched = steer_vm_policy_change(vm, drop_all, &e)) < 0)
				err("SIGHUP: %s", e.msg);
			else if (touched)
				info("SIGHUP: vm %s: policy drop_all %s", vm->name,
				     drop_all ? "on" : "off");
			if (nsm != vm->nsm) {
				if (vm_move(vm, nsm, &e))
					err("SIGHUP: %s", e.msg);
				else
					touched = 1;
			}
			changed += touched > 0;
			continue;
		}
		/* a VM added again keeps its id; one on an NSM this reload
		 * adopted takes the NSM's */
		old = name ? saved_find(saved, nsaved, name) : NULL;
		if (old)
			vm_id_reserve(old->id, false);
		ret = vm_parse_with_id(o, old ? old->id : name ?
				       json_integer_value(json_object_get(adopted_ids, name)) : 0,
				       &tmpl, &e);
		if (ret || vm_create(&tmpl, true, &vm, &e)) {
			struct nkd_err e2;

			free(tmpl.uds);
			err("SIGHUP: %s: vms[%zu]: %s", path, i, e.msg);
			/* a changed entry that failed here: the vm as it was,
			 * unless a VM added since has what it had */
			if (old) {
				vm_id_reserve(old->id, false);
				if (!vm_conflicts(old, &e2) && !vm_create(old, true, &vm, &e2)) {
					err("SIGHUP: vm %s is back as it was (its connections ended)",
					    name);
					changed--;
				} else {
					err("SIGHUP: vm %s could not be added back as it was either: %s; it is gone",
					    name, e2.msg);
				}
			}
			continue;
		}
		free(tmpl.uds);
		if (!json_object_get(readd, vm->name))
			added++;
	}
	/* the NSMs adopted in step 2, their VMs known now: what they still
	 * serve of VMs nkd no longer has */
	for (k = 0; k < NKD_NSM_MAX; k++)
		if (adopted[k] && nkd.nsms[k] && !nkd.nsms[k]->dead)
			nsm_prune_strays(nkd.nsms[k]);
	/* 5. NSMs gone */
	for (k = 0; k < NKD_NSM_MAX; k++) {
		struct nkd_nsm *nsm = nkd.nsms[k];

		if (!nsm || nsm->dead || entry_named(nsms, nsm->name))
			continue;
		if (nsm_delete(nsm, &e)) {
			err("SIGHUP: %s", e.msg);
			continue;
		}
		removed++;
	}
	json_decref(adopted_ids);
	json_decref(keep);
	json_decref(readd);
	json_decref(root);
	for (k = 0; k < (int)nsaved; k++) {
		vm_id_reserve(saved[k].id, false);
		free(saved[k].uds);
	}
	free(saved);
	state_save();
	info("SIGHUP: %s applied: %u added, %u removed, %u changed", path, added, removed, changed);
}
