// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * VM objects in nkd: validation, the per-VM hybrid-vsock listener, the
 * configuration pushed to the VM's NSM, and the AF_VSOCK dispatcher.
 *
 * A VM is identified by its transport only.  With "uds PATH" nkd listens
 * on PATH_7531 (the Firecracker/cloud-hypervisor hybrid-vsock convention:
 * a guest connection to host port 7531 arrives there) and hands that
 * listener to the NSM, which accepts every guest stream of the VM itself.
 * With "cid N" nkd owns one AF_VSOCK listener on port 7531 (open while at
 * least one cid VM exists, unless --no-vsock), accepts, reads the peer CID
 * and passes the stream to that VM's NSM.  nkd never reads guest bytes.
 *
 * A VM of an NSM that nkd steers on its uplink also has entries in the
 * steering maps (nkd_steer.c), written once the NSM has the VM's addresses
 * and removed once it has dropped them.  Moving a VM (vm set NAME nsm NSM)
 * between two steered NSMs is graceful (nkd_move.c: established flows
 * stay on the old NSM by steer_flows entries until they end); otherwise it
 * takes it off the old NSM, configures the new one, points the maps at it
 * in one update and has the new NSM announce the addresses (gratuitous ARP,
 * unsolicited NA), so the remote side learns the new MAC at once.
 */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <linux/vm_sockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"
#include "nkaddr.h"
#include "nkd.h"

struct nkd_vm *vm_find(const char *name)
{
	struct nkd_vm *vm;

	for (vm = nkd.vms; vm; vm = vm->next)
		if (!strcmp(vm->name, name))
			return vm;
	return NULL;
}

/* The VM vm_config_parse_for() validates a new entry for: its own name,
 * id, addresses and transport are not conflicts. */
static const struct nkd_vm *parse_self;

/*
 * A rule newer than the nkd.json being restored (nkd.restoring): said,
 * not enforced, so that an upgraded nkd starts with what the older one
 * ran.  New VMs (nkctl, --config FILE, SIGHUP) are held to it.
 */
static int newer_rule(int ret, struct nkd_err *e)
{
	if (!ret || !nkd.restoring)
		return ret;
	warn("%s; restored as nkd.json has it (a new vm would be refused)", e->msg);
	return 0;
}

static bool vm_id_used(uint32_t id)
{
	struct nkd_vm *vm;

	for (vm = nkd.vms; vm; vm = vm->next)
		if (vm->id == id && vm != parse_self)
			return true;
	return false;
}

/* Ids a VM of the configuration being loaded will ask for (the one it had
 * in nkd.json): not given to a VM without one (vm_id_reserve()). */
static uint8_t id_reserved[(NKD_VM_ID_MAX + 8) / 8];

void vm_id_reserve(uint32_t id, bool on)
{
	if (!id || id > NKD_VM_ID_MAX)
		return;
	if (on)
		id_reserved[id / 8] |= 1u << (id % 8);
	else
		id_reserved[id / 8] &= ~(1u << (id % 8));
}

static bool vm_id_reserved(uint32_t id)
{
	return id_reserved[id / 8] & (1u << (id % 8));
}

/*
 * One spelling of a uds path for comparing two: its directory resolved
 * (realpath: symbolic links, "//", "." and "..") or, if it does not exist
 * yet, with "//" and "." taken out; then the file's name.  Two spellings of
 * one file would otherwise be two VMs, the second replacing the first's
 * socket.  Returns false for a path that names no file (".", "..", "/").
 */
static bool uds_canon(const char *uds, char *out, size_t len)
{
	char d[PATH_MAX], b[PATH_MAX], rp[PATH_MAX], *dir, *base;
	const char *src, *seg;
	size_t n = 0, sl;

	nkd_strscpy(d, uds, sizeof(d));
	nkd_strscpy(b, uds, sizeof(b));
	if (!*uds || uds[strlen(uds) - 1] == '/')
		return false;
	base = basename(b);
	if (!strcmp(base, ".") || !strcmp(base, "..") || !strcmp(base, "/"))
		return false;
	dir = dirname(d);
	if (realpath(dir, rp)) {
		src = rp;
	} else {
		/* lexically: drop empty and "." segments */
		rp[0] = '\0';
		for (seg = dir; *seg; seg += sl) {
			while (*seg == '/')
				seg++;
			sl = strcspn(seg, "/");
			if (!sl || (sl == 1 && seg[0] == '.'))
				continue;
			if (n + sl + 2 >= sizeof(rp))
				return false;
			rp[n++] = '/';
			memcpy(rp + n, seg, sl);
			n += sl;
			rp[n] = '\0';
		}
		src = rp;
	}
	return snprintf(out, len, "%s/%s", strcmp(src, "/") ? src : "", base) < (int)len;
}

/* Does uds (canon: its uds_canon(), or "" to compare it as given) name
 * the file other names? */
static bool uds_same(const char *uds, const char *canon, const char *other)
{
	char oc[PATH_MAX];

	return !strcmp(uds, other) ||
	       (canon[0] && uds_canon(other, oc, sizeof(oc)) && !strcmp(canon, oc));
}

/* Which addresses a VM may own: unicast, not loopback or unspecified. */
static int addr_class_check(const char *vm, const char *what, const char *text,
			    const struct nk_addr *a, struct nkd_err *e)
{
	static const uint8_t mapped[12] = { [10] = 0xff, [11] = 0xff };
	const char *bad = NULL;

	if (nk_addr_is_any(a))
		bad = "the unspecified address";
	else if (nk_addr_is_loopback(a))
		bad = "a loopback address";
	else if (a->family == NK_AF_INET && a->addr[0] >= 224)
		bad = "a multicast, reserved or broadcast address";
	else if (a->family == NK_AF_INET6 && a->addr[0] == 0xff)
		bad = "a multicast address";
	else if (a->family == NK_AF_INET6 && !memcmp(a->addr, mapped, 12))
		bad = "an IPv4-mapped IPv6 address (give the IPv4 address)";
	if (bad)
		return nkd_fail(e, EINVAL, "vm %s: %s %s is %s; a vm needs unicast addresses",
				vm, what, text, bad);
	return 0;
}

/*
 * A VM's address needs a subnet (not /0), and in an IPv4 subnet of more
 * than two addresses it cannot be the subnet's network or broadcast
 * address: nothing on the link would reach it.
 */
static int addr_subnet_check(const char *vm, const char *text, const struct nk_addr *a,
			     int prefix, struct nkd_err *e)
{
	uint32_t ip, host;

	if (!prefix)
		return nkd_fail(e, EINVAL, "vm %s: address %s has prefix /0; give the prefix of its subnet, such as /24",
				vm, text);
	if (a->family != NK_AF_INET || prefix >= 31)
		return 0;
	ip = (uint32_t)a->addr[0] << 24 | (uint32_t)a->addr[1] << 16 | (uint32_t)a->addr[2] << 8 |
	     a->addr[3];
	host = ip & (0xffffffffu >> prefix);
	if (!host)
		return nkd_fail(e, EINVAL, "vm %s: address %s is the network address of its subnet; a vm needs a host address",
				vm, text);
	if (host == 0xffffffffu >> prefix)
		return nkd_fail(e, EINVAL, "vm %s: address %s is the broadcast address of its subnet; a vm needs a host address",
				vm, text);
	return 0;
}

static int parse_addrs(const char *name, json_t *arr, struct nkd_vm *out, struct nkd_err *e)
{
	char txt[NK_ADDRSTRLEN];
	struct nkd_vm *other;
	size_t i, j;
	json_t *v;
	int ret;

	if (!arr)
		return nkd_fail(e, EINVAL, "vm %s: missing 'addr ADDR/PREFIX[,ADDR/PREFIX...]'", name);
	if (!json_is_array(arr))
		return nkd_fail(e, EINVAL, "vm %s: 'addrs' must be a list of \"ADDR/PREFIX\" strings", name);
	if (json_array_size(arr) == 0)
		return nkd_fail(e, EINVAL, "vm %s: give at least one address (addr ADDR/PREFIX)", name);
	if (json_array_size(arr) > NK_VM_ADDRS_MAX)
		return nkd_fail(e, E2BIG, "vm %s: %zu addresses given, at most %d allowed",
				name, json_array_size(arr), NK_VM_ADDRS_MAX);
	json_array_foreach(arr, i, v) {
		struct nsm_vm_addr *va = &out->addrs[i];
		const char *s = json_string_value(v);
		int prefix;

		if (!s)
			return nkd_fail(e, EINVAL, "vm %s: 'addrs' must be a list of strings", name);
		if (nk_addr_parse_prefix(&va->addr, &prefix, s, true))
			return nkd_fail(e, EINVAL, "vm %s: bad address '%s': expected ADDR/PREFIX such as 10.0.0.2/24 or fd00::2/64",
					name, s);
		va->prefix = prefix;
		ret = addr_class_check(name, "address", s, &va->addr, e);
		if (ret)
			return ret;
		nk_addr_ntop(&va->addr, txt, sizeof(txt));
		for (j = 0; j < i; j++)
			if (nk_addr_same_ip(&out->addrs[j].addr, &va->addr))
				return nkd_fail(e, EINVAL, "vm %s: address %s is given twice", name, txt);
		ret = newer_rule(addr_subnet_check(name, s, &va->addr, prefix, e), e);
		if (ret)
			return ret;
		for (other = nkd.vms; other; other = other->next) {
			if (other == parse_self)
				continue;
			for (j = 0; j < other->naddrs; j++)
				if (nk_addr_same_ip(&other->addrs[j].addr, &va->addr))
					return nkd_fail(e, EADDRINUSE, "vm %s: address %s is already used by vm %s",
							name, txt, other->name);
			/* the other way round of gw_not_a_vm() */
			if (nk_addr_same_ip(va->addr.family == NK_AF_INET ? &other->gw4 : &other->gw6,
					    &va->addr)) {
				ret = newer_rule(nkd_fail(e, EADDRINUSE, "vm %s: address %s is vm %s's gateway",
							  name, txt, other->name), e);
				if (ret)
					return ret;
			}
		}
	}
	out->naddrs = json_array_size(arr);
	return 0;
}

static int gw_not_inside(const char *name, const char *gw, const struct nk_addr *a,
			 const struct nkd_vm *vm, struct nkd_err *e)
{
	const char *fam = a->family == NK_AF_INET ? "IPv4" : "IPv6";
	char list[200] = "", txt[NK_ADDRSTRLEN];
	size_t n = 0;
	uint32_t j;

	for (j = 0; j < vm->naddrs && n < sizeof(list); j++)
		if (vm->addrs[j].addr.family == a->family)
			n += snprintf(list + n, sizeof(list) - n, "%s%s/%u", n ? ", " : "",
				      nk_addr_ntop(&vm->addrs[j].addr, txt, sizeof(txt)),
				      vm->addrs[j].prefix);
	if (!n)
		return nkd_fail(e, EINVAL, "vm %s: gateway %s is %s but the vm has no %s address",
				name, gw, fam, fam);
	return nkd_fail(e, EINVAL, "vm %s: gateway %s is not inside the vm's %s prefixes (%s); give an on-link gateway",
			name, gw, fam, list);
}

/* A gateway that is another VM's address: that VM is no router (its
 * address is on the NSM, which would route to itself). */
static int gw_not_a_vm(const char *name, const char *gw, const struct nk_addr *a,
		       struct nkd_err *e)
{
	struct nkd_vm *other;
	uint32_t j;

	for (other = nkd.vms; other; other = other->next) {
		if (other == parse_self)
			continue;
		for (j = 0; j < other->naddrs; j++)
			if (nk_addr_same_ip(&other->addrs[j].addr, a))
				return nkd_fail(e, EINVAL, "vm %s: gateway %s is vm %s's address; give a router's address",
						name, gw, other->name);
	}
	return 0;
}

static int parse_gw(const char *name, json_t *gw, struct nkd_vm *out, struct nkd_err *e)
{
	json_t *arr = gw, *v;
	size_t i;
	uint32_t j;
	int ret = 0;

	if (json_is_string(gw)) {
		arr = json_array();
		json_array_append(arr, gw);
	} else if (!json_is_array(gw)) {
		return nkd_fail(e, EINVAL, "vm %s: 'gw' must be an address or a list of them", name);
	}
	json_array_foreach(arr, i, v) {
		const char *s = json_string_value(v);
		struct nk_addr a, *slot;
		bool inside = false;

		if (!s || nk_addr_parse(&a, s)) {
			ret = nkd_fail(e, EINVAL, "vm %s: bad gateway '%s': expected an address such as 10.0.0.1 or fd00::1",
				       name, s ? s : "?");
			goto out;
		}
		ret = addr_class_check(name, "gateway", s, &a, e);
		if (ret)
			goto out;
		slot = a.family == NK_AF_INET ? &out->gw4 : &out->gw6;
		if (slot->family) {
			ret = nkd_fail(e, EINVAL, "vm %s: more than one %s gateway (give at most one per family)",
				       name, a.family == NK_AF_INET ? "IPv4" : "IPv6");
			goto out;
		}
		for (j = 0; j < out->naddrs; j++) {
			if (nk_addr_same_ip(&out->addrs[j].addr, &a)) {
				ret = nkd_fail(e, EINVAL, "vm %s: gateway %s is one of the vm's own addresses",
					       name, s);
				goto out;
			}
			if (!inside && nk_addr_in_prefix(&a, &out->addrs[j].addr, out->addrs[j].prefix)) {
				inside = true;
				/* the subnet's own network or broadcast address
				 * routes nowhere */
				if (addr_subnet_check(name, s, &a, out->addrs[j].prefix, e)) {
					ret = newer_rule(nkd_fail(e, EINVAL, "vm %s: gateway %s is the network or broadcast address of %s's subnet; give a router's address",
								  name, s, name), e);
					if (ret)
						goto out;
				}
			}
		}
		if (!inside) {
			ret = gw_not_inside(name, s, &a, out, e);
			goto out;
		}
		ret = newer_rule(gw_not_a_vm(name, s, &a, e), e);
		if (ret)
			goto out;
		*slot = a;
	}
out:
	if (arr != gw)
		json_decref(arr);
	return ret;
}

static int parse_cid(const char *name, json_t *v, uint32_t *cid, struct nkd_err *e)
{
	long long n = -1;
	char *end;

	if (json_is_integer(v)) {
		n = json_integer_value(v);
	} else if (json_is_string(v) && *json_string_value(v)) {
		errno = 0;
		n = strtoll(json_string_value(v), &end, 10);
		if (errno || *end)
			n = -1;
	}
	if (n < 3 || n > 0xfffffffeLL)
		return nkd_fail(e, EINVAL, "vm %s: bad cid: guest CIDs are numbers from 3 to 4294967294", name);
	*cid = n;
	return 0;
}

/* "policy": {"drop_all": true|false}; absent or null: nothing dropped. */
int vm_policy_parse(const char *name, json_t *pol, bool *drop_all, struct nkd_err *e)
{
	const char *key;
	json_t *val;

	*drop_all = false;
	if (!pol || json_is_null(pol))
		return 0;
	if (!json_is_object(pol))
		return nkd_fail(e, EINVAL, "vm %s: policy must be an object ({\"drop_all\": true})",
				name);
	json_object_foreach(pol, key, val) {
		if (strcmp(key, "drop_all"))
			return nkd_fail(e, EINVAL, "vm %s: policy: unknown key '%s' (expected drop_all)",
					name, key);
		if (!json_is_boolean(val))
			return nkd_fail(e, EINVAL, "vm %s: policy: drop_all must be true or false", name);
		*drop_all = json_is_true(val);
	}
	return 0;
}

/*
 * Validate a VM from an nkctl request or a configuration entry against the
 * registry.  No side effects; out->uds is allocated on success.
 */
int vm_config_parse(json_t *obj, struct nkd_vm *out, struct nkd_err *e)
{
	static const char *const keys[] = { "name", "id", "nsm", "addrs", "uds", "cid", "gw",
					    "policy", NULL };
	struct sockaddr_un sun;
	const char *key, *name, *nsm, *uds;
	char canon[PATH_MAX];
	struct nkd_vm *vm;
	json_t *val, *jid, *jcid;
	int ret, i;

	memset(out, 0, sizeof(*out));
	out->listen_fd = -1;
	if (!json_is_object(obj))
		return nkd_fail(e, EINVAL, "vm: expected an object");
	json_object_foreach(obj, key, val) {
		for (i = 0; keys[i] && strcmp(keys[i], key); i++)
			;
		if (!keys[i])
			return nkd_fail(e, EINVAL, "vm: unknown key '%s' (expected name, id, nsm, addrs, uds, cid, gw, policy)",
					key);
	}
	name = json_string_value(json_object_get(obj, "name"));
	if (!name)
		return nkd_fail(e, EINVAL, "vm: missing NAME");
	if (!nkd_name_valid(name, NK_NAME_MAX))
		return nkd_fail(e, EINVAL, "vm name '%s' is invalid: use 1-%d characters from A-Z a-z 0-9 _ . -",
				name, NK_NAME_MAX - 1);
	vm = vm_find(name);
	if (vm && vm != parse_self)
		return nkd_fail(e, EEXIST, "vm %s already exists (see 'nkctl vm show %s')", name, name);
	nkd_strscpy(out->name, name, sizeof(out->name));

	nsm = json_string_value(json_object_get(obj, "nsm"));
	if (!nsm)
		return nkd_fail(e, EINVAL, "vm %s: missing 'nsm NSM'", name);
	out->nsm = nsm_find(nsm);
	if (!out->nsm)
		return nkd_fail(e, ENOENT, "vm %s: nsm %s does not exist (see 'nkctl nsm list'; add it with 'nkctl nsm add %s type kernel netns NETNS dev IFNAME')",
				name, nsm, nsm);

	ret = parse_addrs(name, json_object_get(obj, "addrs"), out, e);
	if (ret)
		return ret;
	val = json_object_get(obj, "gw");
	if (val && !json_is_null(val)) {
		ret = parse_gw(name, val, out, e);
		if (ret)
			return ret;
	}

	ret = vm_policy_parse(name, json_object_get(obj, "policy"), &out->drop_all, e);
	if (ret)
		return ret;

	val = json_object_get(obj, "uds");
	jcid = json_object_get(obj, "cid");
	if (!val == !jcid)
		return nkd_fail(e, EINVAL, "vm %s: give exactly one of 'uds PATH' or 'cid N'", name);
	if (jcid) {
		ret = parse_cid(name, jcid, &out->cid, e);
		if (ret)
			return ret;
		for (vm = nkd.vms; vm; vm = vm->next)
			if (vm->cid == out->cid && vm != parse_self)
				return nkd_fail(e, EADDRINUSE, "vm %s: cid %u is already used by vm %s",
						name, out->cid, vm->name);
	} else {
		uds = json_string_value(val);
		if (!uds || uds[0] != '/')
			return nkd_fail(e, EINVAL, "vm %s: uds PATH must be an absolute path", name);
		if (strlen(uds) + 6 >= sizeof(sun.sun_path))
			return nkd_fail(e, ENAMETOOLONG, "vm %s: uds path is too long (at most %zu characters, as %s_%d must fit a Unix socket address)",
					name, sizeof(sun.sun_path) - 7, "PATH", NK_DEFAULT_VSOCK_PORT);
		if (!uds_canon(uds, canon, sizeof(canon))) {
			ret = newer_rule(nkd_fail(e, EINVAL, "vm %s: uds PATH must name a file, not a directory ('%s')",
						  name, uds), e);
			if (ret)
				return ret;
			canon[0] = '\0';	/* restored: compared as given */
		}
		for (vm = nkd.vms; vm; vm = vm->next) {
			if (!vm->uds || vm == parse_self || !uds_same(uds, canon, vm->uds))
				continue;
			ret = nkd_fail(e, EADDRINUSE, "vm %s: uds %s is already used by vm %s%s%s%s",
				       name, uds, vm->name, strcmp(uds, vm->uds) ? " (as " : "",
				       strcmp(uds, vm->uds) ? vm->uds : "",
				       strcmp(uds, vm->uds) ? ")" : "");
			/* only another spelling is a newer rule */
			if (!strcmp(uds, vm->uds) || newer_rule(ret, e))
				return ret;
		}
	}

	jid = json_object_get(obj, "id");
	if (jid) {
		json_int_t id = json_integer_value(jid);

		if (!json_is_integer(jid) || id < 1 || id > NKD_VM_ID_MAX)
			return nkd_fail(e, EINVAL, "vm %s: id must be a number from 1 to %d", name, NKD_VM_ID_MAX);
		if (vm_id_used(id))
			return nkd_fail(e, EEXIST, "vm %s: id %d is already used", name, (int)id);
		out->id = id;
	} else {
		for (out->id = 1; out->id <= NKD_VM_ID_MAX &&
				  (vm_id_used(out->id) || vm_id_reserved(out->id)); out->id++)
			;
		if (out->id > NKD_VM_ID_MAX)
			return nkd_fail(e, ENOSPC, "vm %s: no free vm id (max %d vms)", name, NKD_VM_ID_MAX);
	}
	if (!jcid) {
		out->uds = strdup(json_string_value(val));
		if (!out->uds)
			return nkd_fail(e, ENOMEM, "vm %s: out of memory", name);
	}
	return 0;
}

/*
 * Would template t, already valid once, clash with a VM registered since
 * (SIGHUP bringing a VM back as it was)?  Its id, addresses, transport.
 */
int vm_conflicts(const struct nkd_vm *t, struct nkd_err *e)
{
	char canon[PATH_MAX], txt[NK_ADDRSTRLEN];
	struct nkd_vm *vm;
	uint32_t i, j;

	if (t->uds && !uds_canon(t->uds, canon, sizeof(canon)))
		canon[0] = '\0';
	for (vm = nkd.vms; vm; vm = vm->next) {
		if (!strcmp(vm->name, t->name))
			return nkd_fail(e, EEXIST, "vm %s already exists", t->name);
		if (vm->id == t->id)
			return nkd_fail(e, EEXIST, "vm %s: id %u is vm %s's now", t->name, t->id,
					vm->name);
		if (t->cid && vm->cid == t->cid)
			return nkd_fail(e, EADDRINUSE, "vm %s: cid %u is vm %s's now", t->name,
					t->cid, vm->name);
		if (t->uds && vm->uds && uds_same(t->uds, canon, vm->uds))
			return nkd_fail(e, EADDRINUSE, "vm %s: uds %s is vm %s's now", t->name,
					t->uds, vm->name);
		for (i = 0; i < t->naddrs; i++)
			for (j = 0; j < vm->naddrs; j++)
				if (nk_addr_same_ip(&t->addrs[i].addr, &vm->addrs[j].addr))
					return nkd_fail(e, EADDRINUSE, "vm %s: address %s is vm %s's now",
							t->name,
							nk_addr_ntop(&t->addrs[i].addr, txt, sizeof(txt)),
							vm->name);
	}
	return 0;
}

/*
 * The entry obj as a template for the VM self, in place of what self is
 * now (SIGHUP): vm_config_parse(), with self's own name, id, addresses and
 * transport not counted as conflicts.  out->uds is allocated on success.
 */
int vm_config_parse_for(json_t *obj, const struct nkd_vm *self, struct nkd_vm *out,
			struct nkd_err *e)
{
	int ret;

	parse_self = self;
	ret = vm_config_parse(obj, out, e);
	parse_self = NULL;
	return ret;
}

/* Listen on PATH_7531: replace a stale socket file, never another file. */
static int vm_listen(struct nkd_vm *vm, struct nkd_err *e)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	char dir[sizeof(sun.sun_path)];
	struct stat st;
	int fd, ret;

	nkd_strscpy(sun.sun_path, vm->listen_path, sizeof(sun.sun_path));
	nkd_strscpy(dir, vm->listen_path, sizeof(dir));
	dirname(dir);
	if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode))
		return nkd_fail(e, ENOENT, "vm %s: directory %s does not exist (create it first, or choose another uds path)",
				vm->name, dir);
	if (lstat(vm->listen_path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode))
			return nkd_fail(e, EEXIST, "vm %s: %s exists and is not a socket; remove it or choose another uds path",
					vm->name, vm->listen_path);
		unlink(vm->listen_path);
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return nkd_fail(e, errno, "vm %s: socket: %s", vm->name, strerror(errno));
	if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		ret = nkd_fail(e, errno, "vm %s: cannot bind %s: %s", vm->name, vm->listen_path,
			       strerror(errno));
		goto out_close;
	}
	/* Guests (and the VMM's vsock device) may be unprivileged. */
	if (chmod(vm->listen_path, 0666) < 0 || listen(fd, SOMAXCONN) < 0) {
		ret = nkd_fail(e, errno, "vm %s: cannot listen on %s: %s", vm->name, vm->listen_path,
			       strerror(errno));
		unlink(vm->listen_path);
		goto out_close;
	}
	vm->listen_fd = fd;
	if (lstat(vm->listen_path, &st) == 0) {
		vm->listen_dev = st.st_dev;
		vm->listen_ino = st.st_ino;
	}
	debug("vm %s: listening on %s", vm->name, vm->listen_path);
	return 0;

out_close:
	close(fd);
	return ret;
}

static void vm_unlisten(struct nkd_vm *vm)
{
	struct stat st;

	if (vm->listen_fd < 0)
		return;
	close(vm->listen_fd);
	vm->listen_fd = -1;
	/* only the file nkd bound: one put there since (another nkd's, a
	 * VM's that took the path over) is not this VM's to remove */
	if (lstat(vm->listen_path, &st) == 0 && S_ISSOCK(st.st_mode) &&
	    st.st_dev == vm->listen_dev && st.st_ino == vm->listen_ino)
		unlink(vm->listen_path);
}

int vm_push(struct nkd_vm *vm, struct nkd_err *e)
{
	struct nsm_vm_add add = {
		.vm_id = vm->id,
		.naddrs = vm->naddrs,
		.gw4 = vm->gw4,
		.gw6 = vm->gw6,
	};
	struct nsm_vm_ref ref = { .vm_id = vm->id };
	struct nkd_nsm *nsm = vm->nsm;
	int ret, nerr = 0;

	memcpy(add.name, vm->name, sizeof(add.name));
	memcpy(add.addrs, vm->addrs, sizeof(add.addrs));
	ret = nsm_request(nsm, NSM_MSG_VM_ADD, &add, sizeof(add), -1, &nerr);
	if (!ret && !nerr && vm->listen_fd >= 0)
		ret = nsm_request(nsm, NSM_MSG_ATTACH_LISTENER, &ref, sizeof(ref), vm->listen_fd, &nerr);
	if (ret)
		return nkd_fail(e, -ret, "vm %s: nsm %s did not answer: %s", vm->name, nsm->name,
				strerror(-ret));
	if (nerr)
		return nkd_fail(e, nerr, "vm %s: nsm %s refused: %s", vm->name, nsm->name, strerror(nerr));
	debug("vm %s: configured on nsm %s", vm->name, nsm->name);
	return 0;
}

/*
 * Best effort: tell the NSM to forget a VM.  0, or the NSM's -errno.
 * Without wait (rolling back after the NSM did not answer) the request is
 * only queued: a slow NSM still ends up without the VM.
 */
static int vm_unpush(struct nkd_vm *vm, bool wait)
{
	struct nsm_vm_ref ref = { .vm_id = vm->id };
	int ret, nerr = 0;

	if (vm->nsm->state != NSM_RUNNING)
		return 0;
	ret = nsm_request(vm->nsm, NSM_MSG_VM_DEL, &ref, sizeof(ref), -1, wait ? &nerr : NULL);
	if (ret) {
		warn("vm %s: nsm %s did not answer VM_DEL (%s); it forgets the vm when it restarts",
		     vm->name, vm->nsm->name, strerror(-ret));
		return 0;
	}
	return nerr == ENOENT ? 0 : -nerr;
}

void vm_free(struct nkd_vm *vm)
{
	if (!vm)
		return;
	free(vm->uds);
	free(vm->listen_path);
	free(vm);
}

static void vm_unlink_list(struct nkd_vm *vm)
{
	struct nkd_vm **pp;

	for (pp = &nkd.vms; *pp; pp = &(*pp)->next) {
		if (*pp == vm) {
			*pp = vm->next;
			nkd.nvms--;
			return;
		}
	}
}

/*
 * Add a validated VM (tmpl from vm_config_parse; tmpl->uds is copied).
 * With push (nkctl): create the listener, configure the NSM if it runs,
 * and undo everything on failure.  Without (restore): only register it;
 * state_load() creates listeners, and the NSM gets it with its HELLO.
 */
int vm_create(const struct nkd_vm *tmpl, bool push, struct nkd_vm **out, struct nkd_err *e)
{
	struct nkd_vm *vm, **pp;
	int ret;

	vm = calloc(1, sizeof(*vm));
	if (!vm)
		return nkd_fail(e, ENOMEM, "vm %s: out of memory", tmpl->name);
	*vm = *tmpl;
	vm->uds = NULL;
	vm->next = NULL;
	vm->listen_fd = -1;
	if (tmpl->uds) {
		vm->uds = strdup(tmpl->uds);
		if (!vm->uds || asprintf(&vm->listen_path, "%s_%d", tmpl->uds, NK_DEFAULT_VSOCK_PORT) < 0) {
			vm->listen_path = NULL;
			ret = nkd_fail(e, ENOMEM, "vm %s: out of memory", tmpl->name);
			goto out_free;
		}
	}
	if (push && vm->uds) {
		ret = vm_listen(vm, e);
		if (ret)
			goto out_free;
	}
	if (push && vm->nsm->state == NSM_RUNNING) {
		ret = vm_push(vm, e);
		if (ret)
			goto out_unpush;
	}
	for (pp = &nkd.vms; *pp; pp = &(*pp)->next)
		;
	*pp = vm;
	nkd.nvms++;
	if (vm->cid) {
		ret = vsock_update();
		if (ret && push) {
			nkd_fail(e, -ret, "vm %s: cannot listen on AF_VSOCK port %d: %s",
				 vm->name, NK_DEFAULT_VSOCK_PORT, strerror(-ret));
			vm_unlink_list(vm);
			goto out_unpush;
		}
	}
	if (push) {
		ret = steer_vm_add(vm, e);	/* restore: steer_sync() does it */
		if (ret) {
			vm_unlink_list(vm);
			if (vm->cid)
				vsock_update();
			goto out_unpush;
		}
	}
	if (push && vm->uds)
		info("vm %s: added (id %u, nsm %s, listening on %s)", vm->name, vm->id,
		     vm->nsm->name, vm->listen_path);
	else if (push)
		info("vm %s: added (id %u, nsm %s, cid %u%s)", vm->name, vm->id, vm->nsm->name,
		     vm->cid, nkd.cfg.no_vsock ? ", not served: --no-vsock" : "");
	*out = vm;
	return 0;

out_unpush:
	vm_unpush(vm, ret != -ETIMEDOUT);
	vm_unlisten(vm);
out_free:
	vm_free(vm);
	return ret;
}

int vm_delete(struct nkd_vm *vm, struct nkd_err *e)
{
	int ret;

	ret = vm_unpush(vm, true);
	if (ret)
		return nkd_fail(e, -ret, "vm %s: nsm %s refused to remove it: %s; nothing changed",
				vm->name, vm->nsm->name, strerror(-ret));
	vm_forget(vm);
	return 0;
}

/* Remove the VM from nkd (steering entries, listener), not from its NSM. */
void vm_forget(struct nkd_vm *vm)
{
	move_forget_vm(vm);
	steer_vm_del(vm);
	vm_unlink_list(vm);
	vm_unlisten(vm);
	if (vm->cid)
		vsock_update();
	info("vm %s: deleted (id %u, nsm %s)", vm->name, vm->id, vm->nsm->name);
	vm_free(vm);
}

/*
 * Move a VM to another NSM.  Between two NSMs nkd steers, both running,
 * the move is graceful (nkd_move.c): connections finish on the old NSM.
 * Otherwise its connections on the old NSM end (the old NSM drops its
 * sockets).  Its listener and guest path stay the same.  On failure the
 * VM goes back to the old NSM.
 */
int vm_move(struct nkd_vm *vm, struct nkd_nsm *to, struct nkd_err *e)
{
	struct nkd_nsm *from = vm->nsm;
	struct nkd_err e2;
	int ret;

	if (to == from)
		return 0;
	if (move_graceful_possible(vm, to))
		return move_graceful(vm, to, e);
	ret = vm_unpush(vm, true);
	if (ret)
		return nkd_fail(e, -ret, "vm %s: nsm %s refused to remove it: %s; nothing changed",
				vm->name, from->name, strerror(-ret));
	vm->nsm = to;
	if (to->state == NSM_RUNNING) {
		ret = vm_push(vm, e);
		if (ret) {
			/* a VM_ADD that timed out may still be carried out
			 * (a stopped NSM): its VM_DEL goes behind it, as for
			 * vm add; an NSM the VM drains from drains it again */
			if (!move_draining_on(vm, to) || move_redrain(vm, to))
				vm_unpush(vm, ret != -ETIMEDOUT);
			goto out_back;
		}
	}
	if (steer_nsm_steered(to)) {
		ret = steer_vm_add(vm, e);	/* one vms update redirects it */
		if (ret)
			goto out_unpush;
		if (to->state == NSM_RUNNING)
			link_announce(to, vm);
	} else {
		steer_vm_del(vm);
	}
	move_arrived(vm, to);
	info("vm %s: moved from nsm %s to nsm %s", vm->name, from->name, to->name);
	return 0;

out_unpush:
	/* an NSM the VM drains from keeps those connections: drain it again */
	if (!move_draining_on(vm, to) || to->state != NSM_RUNNING || move_redrain(vm, to))
		vm_unpush(vm, true);
out_back:
	vm->nsm = from;
	if (from->state == NSM_RUNNING && vm_push(vm, &e2))
		err("vm %s: could not go back to nsm %s either: %s", vm->name, from->name, e2.msg);
	/* a failed steer_vm_add() removed the VM's entries, policy included */
	if (steer_nsm_steered(from) && steer_vm_add(vm, &e2))
		err("vm %s: could not restore its steering entries for nsm %s: %s", vm->name,
		    from->name, e2.msg);
	return ret;
}

int vm_open_listener(struct nkd_vm *vm, struct nkd_err *e)
{
	int ret;

	if (!vm->uds || vm->listen_fd >= 0)
		return 0;
	ret = vm_listen(vm, e);
	if (ret)
		nkd_strscpy(vm->error, e->msg, sizeof(vm->error));
	return ret;
}

/* SIGHUP: retry the listeners that could not be created. */
void vm_resync_all(void)
{
	struct nkd_err e;
	struct nkd_vm *vm;

	for (vm = nkd.vms; vm; vm = vm->next) {
		if (!vm->uds || vm->listen_fd >= 0)
			continue;
		if (vm_open_listener(vm, &e)) {
			err("%s", e.msg);
			continue;
		}
		vm->error[0] = '\0';
		info("vm %s: now listening on %s", vm->name, vm->listen_path);
	}
}

static const char *vm_state(const struct nkd_vm *vm)
{
	if (vm->error[0])
		return "error";
	if (vm->uds && vm->listen_fd < 0)
		return "no-listener";
	if (vm->cid && nkd.cfg.no_vsock)
		return "not-served";
	if (vm->nsm->state != NSM_RUNNING)
		return "nsm-down";
	return "ok";
}

json_t *vm_to_json(const struct nkd_vm *vm, bool full)
{
	char txt[NK_ADDRSTRLEN], buf[NK_ADDRSTRLEN + 8];
	json_t *o, *addrs, *gw;
	uint32_t i;

	addrs = json_array();
	for (i = 0; i < vm->naddrs; i++) {
		nk_addr_ntop(&vm->addrs[i].addr, txt, sizeof(txt));
		snprintf(buf, sizeof(buf), "%s/%u", txt, vm->addrs[i].prefix);
		json_array_append_new(addrs, json_string(buf));
	}
	gw = json_array();
	if (vm->gw4.family)
		json_array_append_new(gw, json_string(nk_addr_ntop(&vm->gw4, txt, sizeof(txt))));
	if (vm->gw6.family)
		json_array_append_new(gw, json_string(nk_addr_ntop(&vm->gw6, txt, sizeof(txt))));
	o = json_pack("{s:s, s:i, s:s, s:o, s:o}", "name", vm->name, "id", (json_int_t)vm->id,
		      "nsm", vm->nsm->name, "addrs", addrs, "gw", gw);
	if (vm->uds)
		json_object_set_new(o, "uds", json_string(vm->uds));
	else
		json_object_set_new(o, "cid", json_integer(vm->cid));
	if (vm->drop_all)	/* the default is left out of nkd.json */
		json_object_set_new(o, "policy", json_pack("{s:b}", "drop_all", 1));
	if (!full)
		return o;
	if (vm->uds) {
		json_object_set_new(o, "listen", json_string(vm->listen_path));
		json_object_set_new(o, "transport", json_sprintf("unix:%s", vm->listen_path));
	} else {
		json_object_set_new(o, "transport", json_sprintf("vsock:%u", vm->cid));
	}
	json_object_set_new(o, "state", json_string(vm_state(vm)));
	if (vm->error[0])
		json_object_set_new(o, "error", json_string(vm->error));
	return o;
}

/* ---- AF_VSOCK (never opened with --no-vsock) ---- */

int vsock_update(void)
{
	struct sockaddr_vm svm = {
		.svm_family = AF_VSOCK,
		.svm_cid = VMADDR_CID_ANY,
		.svm_port = NK_DEFAULT_VSOCK_PORT,
	};
	struct nkd_vm *vm;
	bool want = false;
	int fd, ret;

	for (vm = nkd.vms; vm; vm = vm->next)
		want |= vm->cid != 0;
	want &= !nkd.cfg.no_vsock;
	if (!want && nkd.vsock_fd >= 0) {
		nkd_ep_del(nkd.vsock_fd);
		close(nkd.vsock_fd);
		nkd.vsock_fd = -1;
		info("vsock: no cid vm left; closed the AF_VSOCK listener");
	}
	if (!want || nkd.vsock_fd >= 0)
		return 0;
	fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&svm, sizeof(svm)) < 0 || listen(fd, SOMAXCONN) < 0) {
		ret = -errno;
		goto out_close;
	}
	ret = nkd_ep_add(fd, EP_VSOCK, 0, EPOLLIN);
	if (ret)
		goto out_close;
	nkd.vsock_fd = fd;
	info("vsock: listening on AF_VSOCK port %d for cid vms", NK_DEFAULT_VSOCK_PORT);
	return 0;

out_close:
	err("vsock: cannot listen on port %d: %s", NK_DEFAULT_VSOCK_PORT, strerror(-ret));
	close(fd);
	return ret;
}

void vsock_accept(void)
{
	struct sockaddr_vm peer = { 0 };
	socklen_t len;
	struct nkd_vm *vm;
	int fd, ret, nerr;

	while (nkd.vsock_fd >= 0) {
		fd = accept4(nkd.vsock_fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EINTR)
				warn_perror("vsock: accept");
			return;
		}
		len = sizeof(peer);
		if (getpeername(fd, (struct sockaddr *)&peer, &len) < 0) {
			warn_perror("vsock: getpeername");
			close(fd);
			continue;
		}
		for (vm = nkd.vms; vm && vm->cid != peer.svm_cid; vm = vm->next)
			;
		if (!vm) {
			info("vsock: connection from unknown cid %u closed", peer.svm_cid);
		} else if (vm->nsm->state != NSM_RUNNING) {
			warn("vm %s (cid %u): nsm %s is %s; connection closed", vm->name,
			     peer.svm_cid, vm->nsm->name, nsm_state_name(vm->nsm->state));
		} else {
			struct nsm_vm_ref ref = { .vm_id = vm->id };

			nerr = 0;
			ret = nsm_request(vm->nsm, NSM_MSG_ATTACH_STREAM, &ref, sizeof(ref), fd, &nerr);
			if (ret || nerr)
				warn("vm %s (cid %u): nsm %s did not take the connection: %s",
				     vm->name, peer.svm_cid, vm->nsm->name, strerror(ret ? -ret : nerr));
		}
		close(fd);
	}
}
