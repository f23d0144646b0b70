// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The steering programs' userspace side: skeleton lifecycle, map pinning
 * and reuse, XDP attachment, table writes and per-CPU counter sums (see
 * steer_maps.h for the contract and docs/maps.md for the maps).  Table
 * writes are ordered so the programs never see a half-made entry: targets
 * (devmap slot, ifindex map) before the entry that points at them, and the
 * pointing entry first on removal.
 */
#include <errno.h>
#include <limits.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>
#include <linux/ethtool.h>
#include <linux/if_link.h>
#include <linux/magic.h>
#include <linux/sockios.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "log.h"
#include "nkaddr.h"
#include "steer_maps.h"
#include "steer.skel.h"

_Static_assert(NK_STEER_AF_INET == NK_AF_INET, "steer and wire families agree");
_Static_assert(NK_STEER_AF_INET6 == NK_AF_INET6, "steer and wire families agree");

#define BPFFS_ROOT	"/sys/fs/bpf"

struct nk_steer {
	struct steer_bpf *skel;
	int ncpus;
	char pin_dir[PATH_MAX];
};

static int libbpf_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	enum nk_log_level nk = level == LIBBPF_WARN ? NK_LOG_INFO : NK_LOG_DEBUG;
	char *msg, *line, *save = NULL;

	if (level == LIBBPF_DEBUG || !nk_log_enabled(nk))
		return 0;
	if (vasprintf(&msg, fmt, ap) < 0)
		return 0;
	/* one nk log line per line of libbpf's (verifier logs are long) */
	for (line = strtok_r(msg, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
		nk_log(nk, "%s", line);	/* libbpf says "libbpf: " */
	free(msg);
	return 0;
}

void nk_steer_libbpf_log(void)
{
	libbpf_set_print(libbpf_print);
}

static bool on_bpffs(const char *path)
{
	struct statfs sfs;

	return statfs(path, &sfs) == 0 && sfs.f_type == BPF_FS_MAGIC;
}

static int mkdir_p(const char *dir)
{
	char path[PATH_MAX];
	char *p;

	if (snprintf(path, sizeof(path), "%s", dir) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	for (p = path + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(path, 0700) && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(path, 0700) && errno != EEXIST)
		return -errno;
	return 0;
}

int nk_bpffs_ensure(const char *dir)
{
	size_t n = strlen(BPFFS_ROOT);
	int ret;

	/* dir is BPFFS_ROOT or below it, and nothing is mounted there yet */
	if (!strncmp(dir, BPFFS_ROOT, n) && (dir[n] == '\0' || dir[n] == '/') &&
	    !on_bpffs(BPFFS_ROOT)) {
		if (mount("bpf", BPFFS_ROOT, "bpf", 0, "mode=0700"))
			return -errno;
		info("mounted bpffs on %s", BPFFS_ROOT);
	}
	ret = mkdir_p(dir);
	if (ret)
		return ret;
	return on_bpffs(dir) ? 0 : -ENOTSUP;
}

static int pin_path(const struct nk_steer *st, const struct bpf_map *map, char *path)
{
	if (snprintf(path, PATH_MAX, "%s/%s", st->pin_dir, bpf_map__name(map)) >= PATH_MAX)
		return -ENAMETOOLONG;
	return 0;
}

static bool is_devmap(const struct bpf_map *map)
{
	return bpf_map__type(map) == BPF_MAP_TYPE_DEVMAP ||
	       bpf_map__type(map) == BPF_MAP_TYPE_DEVMAP_HASH;
}

/*
 * libbpf (1.1) cannot reuse a pinned devmap by pin path: the kernel adds
 * BPF_F_RDONLY_PROG to its flags, so libbpf's compatibility check fails.
 * Reuse it by fd after our own check of the layout, and pin it ourselves
 * after the load when it was not pinned yet.
 */
static int devmap_reuse(struct bpf_map *map, const char *path)
{
	struct bpf_map_info info = {};
	__u32 len = sizeof(info);
	int fd, ret;

	fd = bpf_obj_get(path);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	ret = bpf_obj_get_info_by_fd(fd, &info, &len);
	if (ret) {
		ret = -errno;
		goto out_close;
	}
	if (info.type != bpf_map__type(map) || info.key_size != bpf_map__key_size(map) ||
	    info.value_size != bpf_map__value_size(map) ||
	    info.max_entries != bpf_map__max_entries(map)) {
		err("steer: pinned map %s has another layout", path);
		ret = -EINVAL;
		goto out_close;
	}
	ret = bpf_map__reuse_fd(map, fd);
out_close:
	close(fd);
	return ret;
}

int nk_steer_open(const char *pin_dir, struct nk_steer **out)
{
	char path[PATH_MAX];
	struct nk_steer *st;
	struct bpf_map *map;
	int ret;

	if (!pin_dir)
		pin_dir = NK_STEER_PIN_DIR;
	st = calloc(1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	if (snprintf(st->pin_dir, sizeof(st->pin_dir), "%s", pin_dir) >= (int)sizeof(st->pin_dir)) {
		ret = -ENAMETOOLONG;
		goto out_free;
	}
	ret = libbpf_num_possible_cpus();
	if (ret < 0)
		goto out_free;
	st->ncpus = ret;

	ret = nk_bpffs_ensure(st->pin_dir);
	if (ret) {
		err("steer: pin dir %s: %s%s", st->pin_dir, strerror(-ret),
		    ret == -ENOTSUP ? " (not on a bpf filesystem)" : "");
		goto out_free;
	}

	st->skel = steer_bpf__open();
	if (!st->skel) {
		ret = -errno;
		err("steer: cannot open the BPF object: %s", strerror(-ret));
		goto out_free;
	}
	bpf_object__for_each_map(map, st->skel->obj) {
		ret = pin_path(st, map, path);
		if (ret)
			goto out_destroy;
		if (is_devmap(map))
			ret = devmap_reuse(map, path);
		else
			ret = bpf_map__set_pin_path(map, path);
		if (ret)
			goto out_destroy;
	}
	ret = steer_bpf__load(st->skel);
	if (ret) {
		err("steer: cannot load the XDP programs with maps in %s: %s%s",
		    st->pin_dir, strerror(-ret),
		    ret == -EINVAL ? " (a pinned map of another layout? remove it to start afresh)" : "");
		goto out_destroy;
	}
	bpf_object__for_each_map(map, st->skel->obj) {
		if (!is_devmap(map))
			continue;
		ret = pin_path(st, map, path);
		if (ret)
			goto out_destroy;
		if (!access(path, F_OK))	/* reused: remember where for unpin */
			ret = bpf_map__set_pin_path(map, path);
		else
			ret = bpf_map__pin(map, path);
		if (ret) {
			err("steer: cannot pin %s: %s", path, strerror(-ret));
			goto out_destroy;
		}
	}
	*out = st;
	return 0;

out_destroy:
	steer_bpf__destroy(st->skel);
out_free:
	free(st);
	return ret;
}

void nk_steer_close(struct nk_steer *st)
{
	if (!st)
		return;
	steer_bpf__destroy(st->skel);
	free(st);
}

int nk_steer_unpin(struct nk_steer *st)
{
	int ret;

	ret = bpf_object__unpin_maps(st->skel->obj, NULL);
	if (ret)
		return ret;
	if (rmdir(st->pin_dir) && errno != ENOTEMPTY && errno != ENOENT)
		return -errno;
	return 0;
}

const char *nk_steer_pin_dir(const struct nk_steer *st)
{
	return st->pin_dir;
}

/*
 * The local-traffic program (tc_steer_local) on tc ingress of this network
 * namespace's loopback, at handle 1, priority 1, in place of an earlier
 * one there (a previous nkd's).  0 or -errno.
 */
int nk_steer_local_attach(struct nk_steer *st)
{
	int fd = bpf_program__fd(st->skel->progs.tc_steer_local), ifindex = if_nametoindex("lo");
	struct bpf_tc_hook hook = { .sz = sizeof(hook), .ifindex = ifindex,
				    .attach_point = BPF_TC_INGRESS };
	struct bpf_tc_opts opts = { .sz = sizeof(opts), .handle = 1, .priority = 1,
				    .prog_fd = fd, .flags = BPF_TC_F_REPLACE };
	int ret;

	if (fd < 0)
		return fd;
	if (!ifindex)
		return -errno;
	ret = bpf_tc_hook_create(&hook);
	if (ret && ret != -EEXIST)
		return ret;
	return bpf_tc_attach(&hook, &opts);
}

int nk_steer_prog_fd(const struct nk_steer *st, enum nk_steer_prog prog)
{
	switch (prog) {
	case NK_STEER_INGRESS:
		return bpf_program__fd(st->skel->progs.xdp_steer_ingress);
	case NK_STEER_EGRESS:
		return bpf_program__fd(st->skel->progs.xdp_steer_egress);
	}
	return -EINVAL;
}

const char *nk_xdp_mode_name(enum nk_xdp_mode mode)
{
	switch (mode) {
	case NK_XDP_AUTO:	return "auto";
	case NK_XDP_NATIVE:	return "native";
	case NK_XDP_GENERIC:	return "generic";
	}
	return "unknown";
}

int nk_steer_attach(struct nk_steer *st, enum nk_steer_prog prog, int ifindex,
		    enum nk_xdp_mode want, enum nk_xdp_mode *got)
{
	int fd = nk_steer_prog_fd(st, prog);
	enum nk_xdp_mode mode;
	int ret = -EINVAL;

	if (fd < 0)
		return fd;
	if (want != NK_XDP_GENERIC) {
		mode = NK_XDP_NATIVE;
		ret = bpf_xdp_attach(ifindex, fd, XDP_FLAGS_DRV_MODE, NULL);
		if (!ret || want == NK_XDP_NATIVE)
			goto out;
		debug("steer: native XDP on ifindex %d: %s; trying generic",
		      ifindex, strerror(-ret));
	}
	mode = NK_XDP_GENERIC;
	ret = bpf_xdp_attach(ifindex, fd, XDP_FLAGS_SKB_MODE, NULL);
out:
	if (ret) {
		err("steer: cannot attach %s XDP to ifindex %d: %s",
		    nk_xdp_mode_name(want == NK_XDP_AUTO ? mode : want), ifindex,
		    strerror(-ret));
		return ret;
	}
	if (got)
		*got = mode;
	return 0;
}

int nk_steer_detach(int ifindex)
{
	struct bpf_xdp_query_opts q = { .sz = sizeof(q) };
	__u32 flags;
	int ret;

	ret = bpf_xdp_query(ifindex, 0, &q);
	if (ret)
		return ret;
	switch (q.attach_mode) {
	case XDP_ATTACHED_NONE:
		return 0;
	case XDP_ATTACHED_DRV:
		flags = XDP_FLAGS_DRV_MODE;
		break;
	case XDP_ATTACHED_SKB:
		flags = XDP_FLAGS_SKB_MODE;
		break;
	case XDP_ATTACHED_HW:
		flags = XDP_FLAGS_HW_MODE;
		break;
	default:
		return -EBUSY;	/* several modes at once: not ours */
	}
	return bpf_xdp_detach(ifindex, flags, NULL);
}

int nk_veth_enable_gro(const char *ifname)
{
	struct ethtool_value ev = { .cmd = ETHTOOL_SGRO, .data = 1 };
	struct ifreq ifr = {};
	int fd, ret = 0;

	if (strlen(ifname) >= sizeof(ifr.ifr_name))
		return -ENAMETOOLONG;
	strcpy(ifr.ifr_name, ifname);
	ifr.ifr_data = (void *)&ev;
	fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (ioctl(fd, SIOCETHTOOL, &ifr))
		ret = -errno;
	close(fd);
	return ret;
}

/* ---- tables ---- */

static int map_fd(const struct bpf_map *map)
{
	return bpf_map__fd(map);
}

/* Return -errno from a libbpf low-level call (they return -1/errno or -errno). */
static int sys_ret(int ret)
{
	return ret < 0 ? -errno : 0;
}

int nk_steer_config_set(struct nk_steer *st, const struct nk_steer_config *cfg)
{
	__u32 zero = 0;

	if (cfg->miss_action > NK_MISS_DROP || cfg->flags)
		return -EINVAL;
	return sys_ret(bpf_map_update_elem(map_fd(st->skel->maps.steer_cfg), &zero, cfg, BPF_ANY));
}

int nk_steer_config_get(struct nk_steer *st, struct nk_steer_config *cfg)
{
	__u32 zero = 0;

	return sys_ret(bpf_map_lookup_elem(map_fd(st->skel->maps.steer_cfg), &zero, cfg));
}

static int devmap_set(const struct bpf_map *map, __u32 slot, int ifindex)
{
	struct bpf_devmap_val val = { .ifindex = ifindex };

	if (!ifindex) {
		if (bpf_map_delete_elem(map_fd(map), &slot) && errno != ENOENT)
			return -errno;
		return 0;
	}
	return sys_ret(bpf_map_update_elem(map_fd(map), &slot, &val, BPF_ANY));
}

int nk_steer_uplink_set(struct nk_steer *st, int ifindex)
{
	if (ifindex < 0)
		return -EINVAL;
	return devmap_set(st->skel->maps.uplink_dev, 0, ifindex);
}

/* Zero a per-CPU value of a PERCPU_ARRAY/PERCPU_HASH (flags: BPF_ANY/NOEXIST). */
static int percpu_zero(struct nk_steer *st, const struct bpf_map *map, __u32 key, __u64 flags)
{
	void *vals;
	int ret;

	vals = calloc(st->ncpus, sizeof(struct nk_steer_counters));
	if (!vals)
		return -ENOMEM;
	ret = sys_ret(bpf_map_update_elem(map_fd(map), &key, vals, flags));
	free(vals);
	return ret;
}

static int percpu_sum(struct nk_steer *st, const struct bpf_map *map, __u32 key,
		      struct nk_steer_counters *sum)
{
	struct nk_steer_counters *vals;
	int cpu, i, ret;

	vals = calloc(st->ncpus, sizeof(*vals));
	if (!vals)
		return -ENOMEM;
	ret = sys_ret(bpf_map_lookup_elem(map_fd(map), &key, vals));
	if (ret)
		goto out_free;
	memset(sum, 0, sizeof(*sum));
	for (cpu = 0; cpu < st->ncpus; cpu++) {
		sum->rx_packets += vals[cpu].rx_packets;
		sum->rx_bytes += vals[cpu].rx_bytes;
		sum->tx_packets += vals[cpu].tx_packets;
		sum->tx_bytes += vals[cpu].tx_bytes;
		sum->pass_packets += vals[cpu].pass_packets;
		sum->pass_bytes += vals[cpu].pass_bytes;
		for (i = 0; i < NK_DROP_SLOTS; i++)
			sum->drops[i] += vals[cpu].drops[i];
	}
out_free:
	free(vals);
	return ret;
}

static int nsm_get(struct nk_steer *st, __u32 nsm_id, struct nk_steer_nsm *nsm)
{
	if (nsm_id >= NK_STEER_NSM_MAX)
		return -EINVAL;
	return sys_ret(bpf_map_lookup_elem(map_fd(st->skel->maps.nsms), &nsm_id, nsm));
}

int nk_steer_nsm_set(struct nk_steer *st, __u32 nsm_id, enum nk_nsm_kind kind, int ifindex)
{
	struct nk_steer_nsm old, nsm = {
		.kind = kind, .dev_slot = nsm_id, .xsk_slot = nsm_id, .ifindex = ifindex,
	};
	struct nk_steer_nsm_ref ref = { .nsm_id = nsm_id };
	__u32 idx = ifindex;
	int ret;

	if ((kind != NK_NSM_KERNEL && kind != NK_NSM_XSK) || ifindex <= 0)
		return -EINVAL;
	ret = nsm_get(st, nsm_id, &old);
	if (ret)
		return ret;
	ret = devmap_set(st->skel->maps.nsm_devs, nsm.dev_slot,
			 kind == NK_NSM_KERNEL ? ifindex : 0);
	if (ret)
		return ret;
	ret = sys_ret(bpf_map_update_elem(map_fd(st->skel->maps.nsm_ifindex), &idx, &ref, BPF_ANY));
	if (ret)
		return ret;
	ret = sys_ret(bpf_map_update_elem(map_fd(st->skel->maps.nsms), &nsm_id, &nsm, BPF_ANY));
	if (ret)
		return ret;
	/* moved to another veth: forget the old one */
	if (old.kind != NK_NSM_NONE && old.ifindex && old.ifindex != nsm.ifindex) {
		idx = old.ifindex;
		bpf_map_delete_elem(map_fd(st->skel->maps.nsm_ifindex), &idx);
	}
	return 0;
}

int nk_steer_nsm_netns_set(struct nk_steer *st, __u32 nsm_id, int netns_id)
{
	struct nk_steer_nsm_netns v = {};

	if (nsm_id >= NK_STEER_NSM_MAX || netns_id < NK_STEER_NETNS_NONE)
		return -EINVAL;
	if (netns_id != NK_STEER_NETNS_NONE) {
		v.flags = NK_STEER_NETNS_F_KNOWN;
		v.netns_id = netns_id;
	}
	return sys_ret(bpf_map_update_elem(map_fd(st->skel->maps.nsm_netns), &nsm_id, &v, BPF_ANY));
}

/* Remove nsm_by_mac's entry for mac if it names nsm_id. */
static int mac_unmap(struct nk_steer *st, const __u8 *mac, __u32 nsm_id)
{
	int fd = map_fd(st->skel->maps.nsm_by_mac);
	struct nk_steer_mac key = {};
	struct nk_steer_nsm_ref ref;

	memcpy(key.mac, mac, sizeof(key.mac));
	if (bpf_map_lookup_elem(fd, &key, &ref) || ref.nsm_id != nsm_id)
		return 0;
	if (bpf_map_delete_elem(fd, &key) && errno != ENOENT)
		return -errno;
	return 0;
}

/*
 * nsm_macs by id and nsm_by_mac by MAC, together: the MAC is mapped to the
 * NSM before nsm_macs names it, and an NSM's old MAC is unmapped after.
 */
int nk_steer_nsm_mac_set(struct nk_steer *st, __u32 nsm_id, const __u8 *mac)
{
	struct nk_steer_nsm_mac v = {}, old = {};
	struct nk_steer_nsm_ref ref = { .nsm_id = nsm_id };
	struct nk_steer_mac key = {};
	int ret;

	if (nsm_id >= NK_STEER_NSM_MAX)
		return -EINVAL;
	if (bpf_map_lookup_elem(map_fd(st->skel->maps.nsm_macs), &nsm_id, &old))
		return -errno;
	if (mac) {
		memcpy(v.mac, mac, sizeof(v.mac));
		v.known = 1;
		memcpy(key.mac, mac, sizeof(key.mac));
		ret = sys_ret(bpf_map_update_elem(map_fd(st->skel->maps.nsm_by_mac), &key, &ref,
						  BPF_ANY));
		if (ret)
			return ret;
	}
	ret = sys_ret(bpf_map_update_elem(map_fd(st->skel->maps.nsm_macs), &nsm_id, &v, BPF_ANY));
	if (ret)
		return ret;
	if (old.known && (!mac || memcmp(old.mac, mac, sizeof(old.mac))))
		return mac_unmap(st, old.mac, nsm_id);
	return 0;
}

int nk_steer_mac_sync(struct nk_steer *st)
{
	int fd = map_fd(st->skel->maps.nsm_by_mac), n = 0, i, ret = 0;
	struct nk_steer_mac key, next, *prev = NULL, stale[2 * NK_STEER_NSM_MAX];
	__u32 id;
	struct nk_steer_nsm_mac m;
	struct nk_steer_nsm_ref ref;

	while (!bpf_map_get_next_key(fd, prev, &next) && n < 2 * NK_STEER_NSM_MAX) {
		key = next;
		prev = &key;
		if (bpf_map_lookup_elem(fd, &key, &ref))
			continue;	/* deleted meanwhile */
		if (ref.nsm_id < NK_STEER_NSM_MAX &&
		    !bpf_map_lookup_elem(map_fd(st->skel->maps.nsm_macs), &ref.nsm_id, &m) &&
		    m.known && !memcmp(m.mac, key.mac, sizeof(m.mac)))
			continue;
		stale[n++] = key;
	}
	for (i = 0; i < n; i++)
		if (bpf_map_delete_elem(fd, &stale[i]) && errno != ENOENT && !ret)
			ret = -errno;
	/* and each known MAC maps to its NSM (an NSM that shared its MAC
	 * with one deleted since lost the entry then) */
	for (id = 0; id < NK_STEER_NSM_MAX; id++) {
		if (bpf_map_lookup_elem(map_fd(st->skel->maps.nsm_macs), &id, &m) || !m.known)
			continue;
		memcpy(key.mac, m.mac, sizeof(key.mac));
		memset(key.pad, 0, sizeof(key.pad));
		ref.nsm_id = id;
		if (bpf_map_update_elem(fd, &key, &ref, BPF_NOEXIST) && errno != EEXIST && !ret)
			ret = -errno;
	}
	return ret;
}

int nk_steer_nsm_del(struct nk_steer *st, __u32 nsm_id)
{
	struct nk_steer_nsm old, none = {};
	__u32 idx;
	int ret;

	ret = nsm_get(st, nsm_id, &old);
	if (ret)
		return ret;
	ret = nk_steer_nsm_netns_set(st, nsm_id, NK_STEER_NETNS_NONE) ?:
	      nk_steer_nsm_mac_set(st, nsm_id, NULL);
	if (ret)
		return ret;
	ret = sys_ret(bpf_map_update_elem(map_fd(st->skel->maps.nsms), &nsm_id, &none, BPF_ANY));
	if (ret)
		return ret;
	if (old.ifindex) {
		idx = old.ifindex;
		if (bpf_map_delete_elem(map_fd(st->skel->maps.nsm_ifindex), &idx) && errno != ENOENT)
			return -errno;
	}
	ret = devmap_set(st->skel->maps.nsm_devs, nsm_id, 0);
	if (ret)
		return ret;
	return percpu_zero(st, st->skel->maps.nsm_stats, nsm_id, BPF_ANY);
}

int nk_steer_vm_set(struct nk_steer *st, __u32 vm_id, __u32 nsm_id)
{
	return nk_steer_vm_set_flags(st, vm_id, nsm_id, 0);
}

int nk_steer_vm_set_flags(struct nk_steer *st, __u32 vm_id, __u32 nsm_id, __u32 flags)
{
	struct nk_steer_vm vm = { .nsm_id = nsm_id, .flags = flags };
	int ret;

	if (!vm_id || nsm_id >= NK_STEER_NSM_MAX || (flags & ~NK_STEER_VM_F_HOLD_SYN))
		return -EINVAL;
	ret = percpu_zero(st, st->skel->maps.vm_stats, vm_id, BPF_NOEXIST);
	if (ret && ret != -EEXIST)
		return ret;
	return sys_ret(bpf_map_update_elem(map_fd(st->skel->maps.vms), &vm_id, &vm, BPF_ANY));
}

static int addr_key(struct nk_steer_addr *key, const struct nk_addr *addr)
{
	memset(key, 0, sizeof(*key));
	switch (addr->family) {
	case NK_AF_INET:
		memcpy(key->addr, addr->addr, 4);
		break;
	case NK_AF_INET6:
		memcpy(key->addr, addr->addr, 16);
		break;
	default:
		return -EAFNOSUPPORT;
	}
	key->family = addr->family;
	return 0;
}

int nk_steer_addr_add(struct nk_steer *st, __u32 vm_id, const struct nk_addr *addr)
{
	struct nk_steer_addr_vm val = { .vm_id = vm_id }, old;
	struct nk_steer_addr key;
	int fd = map_fd(st->skel->maps.addr_vm);
	int ret;

	if (!vm_id)
		return -EINVAL;
	ret = addr_key(&key, addr);
	if (ret)
		return ret;
	if (!bpf_map_lookup_elem(fd, &key, &old) && old.vm_id != vm_id)
		return -EADDRINUSE;
	return sys_ret(bpf_map_update_elem(fd, &key, &val, BPF_ANY));
}

int nk_steer_addr_del(struct nk_steer *st, const struct nk_addr *addr)
{
	struct nk_steer_addr key;
	int ret;

	ret = addr_key(&key, addr);
	if (ret)
		return ret;
	return sys_ret(bpf_map_delete_elem(map_fd(st->skel->maps.addr_vm), &key));
}

int nk_steer_policy_set(struct nk_steer *st, __u32 vm_id, const struct nk_steer_policy *pol)
{
	int fd = map_fd(st->skel->maps.vm_policy);

	if (!vm_id)
		return -EINVAL;
	if (!pol) {
		if (bpf_map_delete_elem(fd, &vm_id) && errno != ENOENT)
			return -errno;
		return 0;
	}
	return sys_ret(bpf_map_update_elem(fd, &vm_id, pol, BPF_ANY));
}

/* Delete every addr_vm entry of vm_id (walk first, then delete). */
static int addr_del_vm(struct nk_steer *st, __u32 vm_id)
{
	int fd = map_fd(st->skel->maps.addr_vm);
	struct nk_steer_addr key, next, *gone;
	struct nk_steer_addr_vm val;
	size_t n = 0, i;
	void *prev = NULL;
	int ret = 0;

	gone = calloc(NK_STEER_ADDR_MAX, sizeof(*gone));
	if (!gone)
		return -ENOMEM;
	while (!bpf_map_get_next_key(fd, prev, &next)) {
		key = next;
		prev = &key;
		if (!bpf_map_lookup_elem(fd, &key, &val) && val.vm_id == vm_id &&
		    n < NK_STEER_ADDR_MAX)
			gone[n++] = key;
	}
	for (i = 0; i < n; i++)
		if (bpf_map_delete_elem(fd, &gone[i]) && errno != ENOENT && !ret)
			ret = -errno;
	free(gone);
	return ret;
}

int nk_steer_vm_del(struct nk_steer *st, __u32 vm_id)
{
	int ret;

	ret = addr_del_vm(st, vm_id);
	if (ret)
		return ret;
	ret = nk_steer_policy_set(st, vm_id, NULL);
	if (ret)
		return ret;
	if (bpf_map_delete_elem(map_fd(st->skel->maps.vms), &vm_id) && errno != ENOENT)
		return -errno;
	if (bpf_map_delete_elem(map_fd(st->skel->maps.vm_stats), &vm_id) && errno != ENOENT)
		return -errno;
	return 0;
}

int nk_steer_vm_foreach(struct nk_steer *st,
			int (*fn)(__u32 vm_id, const struct nk_steer_vm *vm, void *arg),
			void *arg)
{
	int fd = map_fd(st->skel->maps.vms);
	__u32 key, next, *prev = NULL;
	struct nk_steer_vm vm;
	int ret;

	while (!bpf_map_get_next_key(fd, prev, &next)) {
		key = next;
		prev = &key;
		if (bpf_map_lookup_elem(fd, &key, &vm))
			continue;	/* deleted meanwhile */
		ret = fn(key, &vm, arg);
		if (ret)
			return ret;
	}
	return 0;
}

static int flow_addr(__u8 *family, __u8 *dst, const struct nk_addr *a)
{
	__u8 fam;

	if (nk_addr_is_v4mapped(a)) {
		fam = NK_STEER_AF_INET;
		memcpy(dst, a->addr + 12, 4);
	} else if (a->family == NK_AF_INET) {
		fam = NK_STEER_AF_INET;
		memcpy(dst, a->addr, 4);
	} else if (a->family == NK_AF_INET6) {
		fam = NK_STEER_AF_INET6;
		memcpy(dst, a->addr, 16);
	} else {
		return -EAFNOSUPPORT;
	}
	if (*family && *family != fam)
		return -EAFNOSUPPORT;
	*family = fam;
	return 0;
}

int nk_steer_flow_key(struct nk_steer_flow *key, int proto, const struct nk_addr *vm_addr,
		      const struct nk_addr *remote)
{
	int ret;

	memset(key, 0, sizeof(*key));
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return -EINVAL;
	key->proto = proto;
	ret = flow_addr(&key->family, key->vm_addr, vm_addr);
	if (!ret)
		ret = flow_addr(&key->family, key->remote_addr, remote);
	if (ret)
		return ret;
	key->vm_port = htons(vm_addr->port);
	key->remote_port = htons(remote->port);
	return 0;
}

int nk_steer_flow_set(struct nk_steer *st, const struct nk_steer_flow *key,
		      const struct nk_steer_flow_nsm *val)
{
	if (val->nsm_id >= NK_STEER_NSM_MAX)
		return -EINVAL;
	return sys_ret(bpf_map_update_elem(map_fd(st->skel->maps.steer_flows), key, val, BPF_ANY));
}

int nk_steer_flow_del(struct nk_steer *st, const struct nk_steer_flow *key)
{
	if (bpf_map_delete_elem(map_fd(st->skel->maps.steer_flows), key) && errno != ENOENT)
		return -errno;
	return 0;
}

int nk_steer_flow_foreach(struct nk_steer *st,
			  int (*fn)(const struct nk_steer_flow *key,
				    const struct nk_steer_flow_nsm *val, void *arg),
			  void *arg)
{
	int fd = map_fd(st->skel->maps.steer_flows);
	struct nk_steer_flow key, next, *prev = NULL;
	struct nk_steer_flow_nsm val;
	int ret;

	while (!bpf_map_get_next_key(fd, prev, &next)) {
		key = next;
		prev = &key;
		if (bpf_map_lookup_elem(fd, &key, &val))
			continue;	/* deleted meanwhile */
		ret = fn(&key, &val, arg);
		if (ret)
			return ret;
	}
	return 0;
}

int nk_steer_drain_set(struct nk_steer *st, __u32 vm_id, const struct nk_steer_flow_nsm *val)
{
	struct nk_steer_drain key = { .vm_id = vm_id, .nsm_id = val->nsm_id };

	if (!vm_id || val->nsm_id >= NK_STEER_NSM_MAX)
		return -EINVAL;
	return sys_ret(bpf_map_update_elem(map_fd(st->skel->maps.vm_drains), &key, val, BPF_ANY));
}

int nk_steer_drain_del(struct nk_steer *st, __u32 vm_id, __u32 nsm_id)
{
	struct nk_steer_drain key = { .vm_id = vm_id, .nsm_id = nsm_id };

	if (bpf_map_delete_elem(map_fd(st->skel->maps.vm_drains), &key) && errno != ENOENT)
		return -errno;
	return 0;
}

int nk_steer_drain_foreach(struct nk_steer *st,
			   int (*fn)(const struct nk_steer_drain *key,
				     const struct nk_steer_flow_nsm *val, void *arg),
			   void *arg)
{
	int fd = map_fd(st->skel->maps.vm_drains);
	struct nk_steer_drain key, next, *prev = NULL;
	struct nk_steer_flow_nsm val;
	int ret;

	while (!bpf_map_get_next_key(fd, prev, &next)) {
		key = next;
		prev = &key;
		if (bpf_map_lookup_elem(fd, &key, &val))
			continue;	/* deleted meanwhile */
		ret = fn(&key, &val, arg);
		if (ret)
			return ret;
	}
	return 0;
}

int nk_steer_vm_stats(struct nk_steer *st, __u32 vm_id, struct nk_steer_counters *sum)
{
	return percpu_sum(st, st->skel->maps.vm_stats, vm_id, sum);
}

int nk_steer_nsm_stats(struct nk_steer *st, __u32 nsm_id, struct nk_steer_counters *sum)
{
	if (nsm_id >= NK_STEER_NSM_MAX)
		return -EINVAL;
	return percpu_sum(st, st->skel->maps.nsm_stats, nsm_id, sum);
}

int nk_steer_global_stats(struct nk_steer *st, struct nk_steer_counters *sum)
{
	return percpu_sum(st, st->skel->maps.global_stats, 0, sum);
}
