// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * nkd's nkctl control socket.
 *
 * A root-only (SO_PEERCRED uid 0, mode 0600) AF_UNIX SOCK_SEQPACKET socket.
 * One packet is one JSON message:
 *
 *   request  {"object": "vm", "verb": "add", "args": {...}}
 *   reply    {"ok": true, "result": <object|array>, "warnings": [...]}
 *            {"ok": false, "error": "one line for the operator"}
 *
 * args use the keys of the configuration file (nkd.json), so a request
 * and a config entry go through the same validation.  Every request is
 * validated completely before anything changes; an apply step that fails
 * is rolled back.  "nsm add" is answered when the new NSM has said HELLO
 * (or failed to), so its reply is deferred; the client's other requests
 * wait meanwhile.  "teardown" removes everything nkd created, answers,
 * and makes nkd exit.
 */
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"
#include "nkd.h"

struct nkd_client {
	int slot;
	int fd;
	pid_t pid;
	uid_t uid;	/* not root: every request is refused */
	struct nkd_nsm *pending;	/* deferred "nsm add" */
	uint64_t active_ms;	/* nkd_now_ms() of its connect or last request */
};

static void client_close(struct nkd_client *c)
{
	if (c->pending)
		c->pending->waiter = NULL;
	nkd_ep_del(c->fd);
	close(c->fd);
	nkd.clients[c->slot] = NULL;
	free(c);
}

static void client_send(struct nkd_client *c, json_t *reply)
{
	char *s = json_dumps(reply, JSON_COMPACT);
	size_t len;

	if (!s) {
		err("nkctl client (pid %d): cannot encode the reply", (int)c->pid);
		return;
	}
	len = strlen(s);
	if (len > NKD_CTL_MSG_MAX || send(c->fd, s, len, MSG_NOSIGNAL) < 0)
		warn("nkctl client (pid %d): cannot send the reply (%zu bytes): %s",
		     (int)c->pid, len, len > NKD_CTL_MSG_MAX ? "too large" : strerror(errno));
	free(s);
}

static void reply_error(struct nkd_client *c, const char *msg)
{
	json_t *r = json_pack("{s:b, s:s}", "ok", 0, "error", msg);

	client_send(c, r);
	json_decref(r);
}

/* Takes ownership of result and warnings (either may be NULL). */
static void reply_ok(struct nkd_client *c, json_t *result, json_t *warnings)
{
	json_t *r = json_pack("{s:b}", "ok", 1);

	json_object_set_new(r, "result", result ? result : json_null());
	if (warnings && json_array_size(warnings))
		json_object_set_new(r, "warnings", warnings);
	else
		json_decref(warnings);
	client_send(c, r);
	json_decref(r);
}

static void client_wait(struct nkd_client *c, bool waiting)
{
	union nkd_ep_ref ref = { .type = EP_CLIENT, .idx = c->slot };
	struct epoll_event ev = {
		.events = waiting ? EPOLLRDHUP : EPOLLIN,
		.data.u64 = ref.u64,
	};

	epoll_ctl(nkd.epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

/*
 * Write nkd.json after a change that is live already.  The change stands
 * whatever happens here, so the request still succeeds; a state file that
 * cannot be written becomes a warning in the reply (nkctl prints it on
 * stderr, exit status 0), besides nkd's log: the operator learns at once
 * that a restarted nkd would not know the change.
 */
static void state_save_warn(json_t *warnings)
{
	int ret = state_save();

	if (ret)
		json_array_append_new(warnings, json_sprintf(
			"cannot write the state file %s/%s (through %s/%s.tmp): %s; the change is live but not persisted, and a restarted nkd will not know it (fix the state directory; the next change writes the whole file)",
			nkd.cfg.state_dir, NKD_STATE_FILE, nkd.cfg.state_dir, NKD_STATE_FILE,
			strerror(-ret)));
}

void nkd_client_reply_saved(struct nkd_client *c, json_t *result)
{
	json_t *warnings = json_array();

	state_save_warn(warnings);
	c->pending = NULL;
	client_wait(c, false);
	reply_ok(c, result, warnings);
}

void nkd_client_reply(struct nkd_client *c, json_t *result, const struct nkd_err *e)
{
	c->pending = NULL;
	client_wait(c, false);
	if (e)
		reply_error(c, e->msg);
	else
		reply_ok(c, result, NULL);
}

void nkd_client_forget_nsm(struct nkd_client *c)
{
	c->pending = NULL;
	client_wait(c, false);
}

/*
 * Create the socket: refuse to steal it from a live nkd, replace a stale
 * one, and bind with umask 077 so it is never briefly world-accessible.
 */
int nkd_ctl_open(void)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	const char *path = nkd.cfg.control;
	char dir[sizeof(sun.sun_path)];
	struct stat st;
	mode_t old;
	int fd, ret;

	if (strlen(path) >= sizeof(sun.sun_path)) {
		err("control socket path %s is too long (max %zu)", path, sizeof(sun.sun_path) - 1);
		return -ENAMETOOLONG;
	}
	strcpy(sun.sun_path, path);
	strcpy(dir, path);
	if (mkdir(dirname(dir), 0755) < 0 && errno != EEXIST) {
		err_perror("cannot create the directory of %s", path);
		return -errno;
	}
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		err_perror("control socket");
		return -errno;
	}
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			err("%s exists and is not a socket; remove it or use --control PATH", path);
			ret = -EEXIST;
			goto out_close;
		}
		if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0 || errno == EAGAIN) {
			err("another nkd is already serving %s; stop it first or use --control PATH",
			    path);
			ret = -EADDRINUSE;
			goto out_close;
		}
		close(fd);
		unlink(path);
		fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			err_perror("control socket");
			return -errno;
		}
	}
	old = umask(077);
	ret = bind(fd, (struct sockaddr *)&sun, sizeof(sun));
	umask(old);
	if (ret < 0) {
		ret = -errno;
		err_perror("cannot bind the control socket %s", path);
		goto out_close;
	}
	if (chmod(path, 0600) < 0 || listen(fd, 16) < 0) {
		ret = -errno;
		err_perror("control socket %s", path);
		goto out_unlink;
	}
	ret = nkd_ep_add(fd, EP_CTL_LISTEN, 0, EPOLLIN);
	if (ret) {
		err("epoll_ctl: %s", strerror(-ret));
		goto out_unlink;
	}
	nkd.ctl_fd = fd;
	return 0;

out_unlink:
	unlink(path);
out_close:
	close(fd);
	return ret;
}

/*
 * Every slot is taken: close the client that has waited longest without a
 * request (nkctl sends one and goes; what holds a slot idle is a client
 * that connected and said nothing), so that an operator is never locked
 * out.  A client whose "nsm add" is still being answered is kept.
 * Returns the freed slot, or NKD_CLIENT_MAX.
 */
static int client_evict(pid_t newcomer)
{
	struct nkd_client *c, *idle = NULL;
	int slot;

	for (slot = 0; slot < NKD_CLIENT_MAX; slot++) {
		c = nkd.clients[slot];
		if (c && !c->pending && (!idle || c->active_ms < idle->active_ms))
			idle = c;
	}
	if (!idle)
		return NKD_CLIENT_MAX;
	slot = idle->slot;
	warn("control socket: %d nkctl clients connected; closing pid %d's, idle for %llu ms, for pid %d",
	     NKD_CLIENT_MAX, (int)idle->pid,
	     (unsigned long long)(nkd_now_ms() - idle->active_ms), (int)newcomer);
	client_close(idle);
	return slot;
}

void nkd_ctl_accept(void)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	struct nkd_client *c;
	int fd, slot, sz = NKD_CTL_MSG_MAX + 4096;

	for (;;) {
		fd = accept4(nkd.ctl_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EINTR)
				warn_perror("control socket: accept");
			return;
		}
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
			warn_perror("control socket: SO_PEERCRED");
			close(fd);
			continue;
		}
		for (slot = 0; slot < NKD_CLIENT_MAX && nkd.clients[slot]; slot++)
			;
		if (slot == NKD_CLIENT_MAX)
			slot = client_evict(cred.pid);
		c = slot < NKD_CLIENT_MAX ? calloc(1, sizeof(*c)) : NULL;
		if (!c) {
			warn("control socket: too many nkctl clients; refusing pid %d", (int)cred.pid);
			close(fd);
			continue;
		}
		/* Large "list" replies: one packet, bounded by NKD_CTL_MSG_MAX. */
		setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sz, sizeof(sz));
		c->slot = slot;
		c->fd = fd;
		c->pid = cred.pid;
		c->uid = cred.uid;
		c->active_ms = nkd_now_ms();
		if (nkd_ep_add(fd, EP_CLIENT, slot, EPOLLIN)) {
			warn_perror("epoll_ctl");
			close(fd);
			free(c);
			continue;
		}
		nkd.clients[slot] = c;
	}
}

/* ---- request handlers: return a result, NULL + e on error ---- */

static const char *arg_name(json_t *args, struct nkd_err *e, const char *obj)
{
	const char *name = json_string_value(json_object_get(args, "name"));

	if (!name)
		nkd_fail(e, EINVAL, "%s: missing NAME", obj);
	return name;
}

static json_t *nsm_list(void)
{
	json_t *a = json_array();
	int i;

	for (i = 0; i < NKD_NSM_MAX; i++)
		if (nkd.nsms[i] && !nkd.nsms[i]->dead)
			json_array_append_new(a, nsm_to_json(nkd.nsms[i], true));
	return a;
}

static json_t *vm_list(void)
{
	json_t *a = json_array();
	struct nkd_vm *vm;

	for (vm = nkd.vms; vm; vm = vm->next)
		json_array_append_new(a, vm_to_json(vm, true));
	return a;
}

static struct nkd_nsm *nsm_lookup(json_t *args, struct nkd_err *e)
{
	const char *name = arg_name(args, e, "nsm");
	struct nkd_nsm *nsm;

	if (!name)
		return NULL;
	nsm = nsm_find(name);
	if (!nsm)
		nkd_fail(e, ENOENT, "nsm %s does not exist (see 'nkctl nsm list')", name);
	return nsm;
}

static struct nkd_vm *vm_lookup(json_t *args, struct nkd_err *e)
{
	const char *name = arg_name(args, e, "vm");
	struct nkd_vm *vm;

	if (!name)
		return NULL;
	vm = vm_find(name);
	if (!vm)
		nkd_fail(e, ENOENT, "vm %s does not exist (see 'nkctl vm list')", name);
	return vm;
}

/* A policy only the uplink's programs enforce: say so for a VM off them. */
static void policy_warn(const struct nkd_vm *vm, json_t *warnings)
{
	if (!steer_nsm_steered(vm->nsm))
		json_array_append_new(warnings, json_sprintf(
			"vm %s: nsm %s is not steered by nkd's uplink; its policy is stored and enforced once the vm is on a steered nsm",
			vm->name, vm->nsm->name));
}

/* Returns 1 when the reply is deferred (nsm add waiting for HELLO). */
static int handle_nsm(struct nkd_client *c, const char *verb, json_t *args,
		      json_t **res, json_t *warnings, struct nkd_err *e)
{
	struct nkd_nsm tmpl, *nsm;
	int ret;

	if (!strcmp(verb, "list")) {
		*res = nsm_list();
		return 0;
	}
	if (!strcmp(verb, "add")) {
		ret = nsm_config_parse(args, &tmpl, true, e);
		if (ret)
			return ret;
		ret = nsm_create(&tmpl, true, &nsm, e);
		if (ret)
			return ret;
		if (nsm->state == NSM_RUNNING) {	/* adopted */
			state_save_warn(warnings);
			*res = nsm_to_json(nsm, true);
			return 0;
		}
		/* Answered by nkd_client_reply() after the HELLO; until then
		 * only a hang-up of this client is of interest. */
		nsm->waiter = c;
		c->pending = nsm;
		client_wait(c, true);
		return 1;
	}
	nsm = nsm_lookup(args, e);
	if (!nsm)
		return -ENOENT;
	if (!strcmp(verb, "show")) {
		*res = nsm_to_json(nsm, true);
		return 0;
	}
	if (!strcmp(verb, "del")) {
		json_t *obj = nsm_to_json(nsm, true);

		ret = nsm_delete(nsm, e);
		if (ret) {
			json_decref(obj);
			return ret;
		}
		state_save_warn(warnings);
		*res = obj;
		return 0;
	}
	return nkd_fail(e, EOPNOTSUPP, "nsm %s: unknown verb (see 'nkctl nsm help')", verb);
}

static int handle_vm(const char *verb, json_t *args, json_t **res, json_t *warnings,
		     struct nkd_err *e)
{
	struct nkd_vm tmpl, *vm;
	int ret;

	if (!strcmp(verb, "list")) {
		*res = vm_list();
		return 0;
	}
	if (!strcmp(verb, "add")) {
		ret = vm_config_parse(args, &tmpl, e);
		if (ret)
			return ret;
		ret = vm_create(&tmpl, true, &vm, e);
		free(tmpl.uds);
		if (ret)
			return ret;
		if (vm->nsm->state != NSM_RUNNING)
			json_array_append_new(warnings, json_sprintf(
				"vm %s: nsm %s is %s; the vm is configured on it once it runs",
				vm->name, vm->nsm->name, nsm_state_name(vm->nsm->state)));
		if (vm->drop_all)
			policy_warn(vm, warnings);
		if (vm->cid && nkd.cfg.no_vsock)
			json_array_append_new(warnings, json_sprintf(
				"vm %s: nkd runs with --no-vsock; cid %u is stored but not served",
				vm->name, vm->cid));
		state_save_warn(warnings);
		*res = vm_to_json(vm, true);
		return 0;
	}
	vm = vm_lookup(args, e);
	if (!vm)
		return -ENOENT;
	if (!strcmp(verb, "show")) {
		*res = vm_to_json(vm, true);
		return 0;
	}
	if (!strcmp(verb, "del")) {
		json_t *obj = vm_to_json(vm, true);

		ret = vm_delete(vm, e);
		if (ret) {
			json_decref(obj);
			return ret;
		}
		state_save_warn(warnings);
		*res = obj;
		return 0;
	}
	if (!strcmp(verb, "set")) {
		const char *to = json_string_value(json_object_get(args, "nsm"));
		struct nkd_nsm *nsm;

		if (!to)
			return nkd_fail(e, EINVAL, "vm %s: nothing to set (give nsm NSM)", vm->name);
		nsm = nsm_find(to);
		if (!nsm)
			return nkd_fail(e, ENOENT, "vm %s: nsm %s does not exist (see 'nkctl nsm list')",
					vm->name, to);
		ret = vm_move(vm, nsm, e);
		if (ret)
			return ret;
		if (nsm->state != NSM_RUNNING)
			json_array_append_new(warnings, json_sprintf(
				"vm %s: nsm %s is %s; the vm is configured on it once it runs",
				vm->name, nsm->name, nsm_state_name(nsm->state)));
		state_save_warn(warnings);
		*res = vm_to_json(vm, true);
		return 0;
	}
	return nkd_fail(e, EOPNOTSUPP, "vm %s: unknown verb (see 'nkctl vm help')", verb);
}

/* A VM's policy as "policy show" and "policy list" give it. */
static json_t *policy_to_json(const struct nkd_vm *vm)
{
	return json_pack("{s:s, s:s, s:b, s:b}", "vm", vm->name, "nsm", vm->nsm->name,
			 "drop_all", vm->drop_all, "enforced", steer_nsm_steered(vm->nsm));
}

/*
 * policy list | show NAME | set NAME drop_all on|off.  A policy is the
 * VM's (nkd.json keeps it in the VM's entry); the uplink's XDP programs
 * enforce it for VMs on steered NSMs, and "enforced" says which.
 */
static int handle_policy(const char *verb, json_t *args, json_t **res, json_t *warnings,
			 struct nkd_err *e)
{
	const char *v;
	struct nkd_vm *vm;
	int ret;

	if (!strcmp(verb, "list")) {
		*res = json_array();
		for (vm = nkd.vms; vm; vm = vm->next)
			json_array_append_new(*res, policy_to_json(vm));
		return 0;
	}
	if (strcmp(verb, "show") && strcmp(verb, "set"))
		return nkd_fail(e, EOPNOTSUPP, "policy %s: unknown verb (see 'nkctl policy help')",
				verb);
	vm = vm_lookup(args, e);
	if (!vm)
		return -ENOENT;
	if (!strcmp(verb, "set")) {
		v = json_string_value(json_object_get(args, "drop_all"));
		if (!v)
			return nkd_fail(e, EINVAL, "policy %s: nothing to set (give drop-all on|off)",
					vm->name);
		if (strcmp(v, "on") && strcmp(v, "off"))
			return nkd_fail(e, EINVAL, "policy %s: drop-all is on or off, not '%s'",
					vm->name, v);
		ret = steer_vm_policy_change(vm, !strcmp(v, "on"), e);
		if (ret < 0)
			return ret;
		if (ret)
			info("vm %s: policy drop_all %s%s", vm->name, v,
			     steer_nsm_steered(vm->nsm) ? "" : " (stored; its nsm is not steered)");
		policy_warn(vm, warnings);
		state_save_warn(warnings);
	}
	*res = policy_to_json(vm);
	return 0;
}

static int handle_stats(const char *verb, json_t *args, json_t **res, struct nkd_err *e)
{
	if (strcmp(verb, "show"))
		return nkd_fail(e, EOPNOTSUPP, "stats %s: unknown verb (see 'nkctl stats help')", verb);
	return steer_stats(args, res, e);
}

/*
 * Remove every VM and NSM (with the namespaces and veths nkd created),
 * detach the XDP programs, unpin the maps, store an empty configuration,
 * then exit.  Failures are logged and reported, and the rest still goes.
 */
static int handle_teardown(json_t **res, json_t *warnings)
{
	json_t *vms = json_array(), *nsms = json_array();
	struct nkd_err e;
	int i;

	while (nkd.vms) {
		struct nkd_vm *vm = nkd.vms;

		json_array_append_new(vms, json_string(vm->name));
		if (vm_delete(vm, &e)) {
			/* the NSM refused: it is stopped below anyway */
			json_array_append_new(warnings, json_string(e.msg));
			vm_forget(vm);
		}
	}
	for (i = 0; i < NKD_NSM_MAX; i++) {
		struct nkd_nsm *nsm = nkd.nsms[i];

		if (!nsm || nsm->dead)
			continue;
		json_array_append_new(nsms, json_string(nsm->name));
		if (nsm_delete(nsm, &e))
			json_array_append_new(warnings, json_string(e.msg));
	}
	*res = json_pack("{s:o, s:o, s:o}", "vms", vms, "nsms", nsms, "steering", steer_teardown());
	state_save_warn(warnings);
	info("teardown: removed %zu vms and %zu nsms; exiting", json_array_size(vms),
	     json_array_size(nsms));
	nkd.stop = true;
	return 0;
}

/*
 * The args of the requests that do not add: string values under these keys
 * only.  An add's args are a configuration entry, which nsm_config_parse()
 * and vm_config_parse() check as strictly; an unknown object or verb is
 * refused by its handler.  A request nkctl would not send (a key left out
 * of the table, a name that is a number) is refused, not read as absent.
 */
static const struct {
	const char *object, *verb;	/* teardown's verb is "" */
	const char *keys[3];		/* NULL-terminated */
} request_args[] = {
	{ "nsm", "list", { NULL } },
	{ "nsm", "show", { "name", NULL } },
	{ "nsm", "del", { "name", NULL } },
	{ "vm", "list", { NULL } },
	{ "vm", "show", { "name", NULL } },
	{ "vm", "del", { "name", NULL } },
	{ "vm", "set", { "name", "nsm", NULL } },
	{ "conn", "list", { "vm", NULL } },
	{ "stats", "show", { "vm", "nsm", NULL } },
	{ "policy", "list", { NULL } },
	{ "policy", "show", { "name", NULL } },
	{ "policy", "set", { "name", "drop_all", NULL } },
	{ "teardown", "", { NULL } },
};

static int request_args_check(const char *object, const char *verb, json_t *args,
			      struct nkd_err *e)
{
	const char *key, *const *keys = NULL;
	char expected[64] = "";
	json_t *val;
	size_t i;

	for (i = 0; i < sizeof(request_args) / sizeof(request_args[0]); i++)
		if (!strcmp(request_args[i].object, object) && !strcmp(request_args[i].verb, verb))
			keys = request_args[i].keys;
	if (!keys)
		return 0;
	for (i = 0; keys[i]; i++)
		snprintf(expected + strlen(expected), sizeof(expected) - strlen(expected), "%s%s",
			 i ? ", " : "", keys[i]);
	json_object_foreach(args, key, val) {
		for (i = 0; keys[i] && strcmp(keys[i], key); i++)
			;
		if (!keys[i])
			return nkd_fail(e, EINVAL, "bad request: %s%s%s takes no argument '%s'%s%s%s",
					object, verb[0] ? " " : "", verb, key,
					expected[0] ? " (expected " : "", expected,
					expected[0] ? ")" : "");
		if (!json_is_string(val))
			return nkd_fail(e, EINVAL, "bad request: %s%s%s: '%s' must be a string",
					object, verb[0] ? " " : "", verb, key);
	}
	return 0;
}

static void handle_request(struct nkd_client *c, const char *buf, size_t len)
{
	json_t *req, *args, *res = NULL, *warnings = json_array();
	const char *object, *verb;
	struct nkd_err e = { "" };
	json_error_t jerr;
	int ret;

	req = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!req || !json_is_object(req)) {
		nkd_fail(&e, EINVAL, "bad request: %s", req ? "not a JSON object" : jerr.text);
		goto out_err;
	}
	object = json_string_value(json_object_get(req, "object"));
	verb = json_string_value(json_object_get(req, "verb"));
	args = json_object_get(req, "args");
	if (!object || !verb || (args && !json_is_object(args))) {
		nkd_fail(&e, EINVAL, "bad request: want {\"object\", \"verb\", \"args\": {...}}");
		goto out_err;
	}
	if (!args) {
		args = json_object();
		json_object_set_new(req, "args", args);
	}
	debug("nkctl (pid %d): %s %s", (int)c->pid, object, verb);
	if (request_args_check(object, verb, args, &e))
		goto out_err;
	if (!strcmp(object, "nsm")) {
		ret = handle_nsm(c, verb, args, &res, warnings, &e);
	} else if (!strcmp(object, "vm")) {
		ret = handle_vm(verb, args, &res, warnings, &e);
	} else if (!strcmp(object, "stats")) {
		ret = handle_stats(verb, args, &res, &e);
	} else if (!strcmp(object, "policy")) {
		ret = handle_policy(verb, args, &res, warnings, &e);
	} else if (!strcmp(object, "conn") && !strcmp(verb, "list")) {
		ret = conn_list(args, &res, warnings, &e);
	} else if (!strcmp(object, "teardown") && !verb[0]) {
		ret = handle_teardown(&res, warnings);
	} else {
		ret = nkd_fail(&e, EOPNOTSUPP, "%s %s: not implemented yet", object, verb);
	}
	if (ret < 0)
		goto out_err;
	if (ret == 0)
		reply_ok(c, res, warnings);
	else
		json_decref(warnings);	/* deferred: nkd_client_reply() answers */
	json_decref(req);
	return;

out_err:
	info("nkctl request refused: %s", e.msg);
	reply_error(c, e.msg);
	json_decref(warnings);
	json_decref(req);
}

void nkd_client_event(uint32_t idx, uint32_t events)
{
	struct nkd_client *c = idx < NKD_CLIENT_MAX ? nkd.clients[idx] : NULL;
	static char buf[65536];
	ssize_t n;

	if (!c)
		return;
	if (c->pending) {
		if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
			client_close(c);
		return;
	}
	n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT | MSG_TRUNC);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		client_close(c);
		return;
	}
	c->active_ms = nkd_now_ms();
	if (c->uid != 0) {
		warn("control socket: refused a request from pid %d, uid %d (root only)",
		     (int)c->pid, (int)c->uid);
		reply_error(c, "nkd accepts requests from root only; run nkctl as root");
		client_close(c);
		return;
	}
	if ((size_t)n > sizeof(buf)) {
		reply_error(c, "bad request: larger than 64 KiB");
		return;
	}
	handle_request(c, buf, n);
}
