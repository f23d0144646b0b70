// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * nkd's persistent configuration: STATE-DIR/nkd.json, rewritten atomically
 * (temporary file, fsync, rename) after every change, and read back at
 * start-up; --config FILE uses the same schema (docs/cli.md):
 *
 *   {"version": 1,
 *    "nsms": [{"name", "type", "netns", "dev"}],
 *    "vms":  [{"name", "id", "nsm", "addrs": [...], "uds" | "cid", "gw": [...]}]}
 *
 * Loading is two-phase: every entry is validated and registered first
 * (any error: nkd refuses to start and says which entry is wrong, nothing
 * was started); only then are listeners created and NSMs adopted or
 * spawned.  A failure in that second phase (a netns that is gone, a
 * directory that is missing) leaves the object configured and marked
 * failed, so the configuration is never silently lost.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "nkd.h"

int state_save(void)
{
	char path[PATH_MAX], tmp[PATH_MAX + 8];
	json_t *root, *nsms, *vms;
	struct nkd_vm *vm;
	int fd, i, ret = 0;

	nsms = json_array();
	for (i = 0; i < NKD_NSM_MAX; i++)
		if (nkd.nsms[i] && !nkd.nsms[i]->dead)
			json_array_append_new(nsms, nsm_to_json(nkd.nsms[i], false));
	vms = json_array();
	for (vm = nkd.vms; vm; vm = vm->next)
		json_array_append_new(vms, vm_to_json(vm, false));
	root = json_pack("{s:i, s:o, s:o}", "version", 1, "nsms", nsms, "vms", vms);

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
		} else if (!strcmp(key, "nsms") || !strcmp(key, "vms")) {
			if (!json_is_array(val)) {
				err("%s: \"%s\" must be a list", path, key);
				return -EINVAL;
			}
		} else {
			err("%s: unknown key \"%s\" (expected version, nsms, vms)", path, key);
			return -EINVAL;
		}
	}
	return 0;
}

int state_load(const char *path, bool required)
{
	struct nkd_err e = { "" };
	json_t *root, *nsms, *vms, *o;
	struct nkd_nsm tmpl_nsm, *nsm;
	struct nkd_vm tmpl_vm, *vm;
	unsigned int n_nsm = 0;
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
	ret = check_top(path, root);
	if (ret)
		goto out;
	nsms = json_object_get(root, "nsms");
	vms = json_object_get(root, "vms");

	/* Phase 1: validate and register; nothing is started yet. */
	json_array_foreach(nsms, i, o) {
		ret = nsm_config_parse(o, &tmpl_nsm, false, &e);
		if (!ret)
			ret = nsm_create(&tmpl_nsm, false, &nsm, &e);
		if (ret) {
			err("%s: nsms[%zu]: %s", path, i, e.msg);
			goto out;
		}
	}
	json_array_foreach(vms, i, o) {
		ret = vm_config_parse(o, &tmpl_vm, &e);
		if (!ret)
			ret = vm_create(&tmpl_vm, false, &vm, &e);
		free(tmpl_vm.uds);
		if (ret) {
			err("%s: vms[%zu]: %s", path, i, e.msg);
			goto out;
		}
	}

	/* Phase 2: listeners first, so that adopted NSMs get them now. */
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
	info("configuration from %s: %u nsms, %u vms", path, n_nsm, nkd.nvms);
	ret = 0;
out:
	json_decref(root);
	return ret;
}
