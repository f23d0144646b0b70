/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * nkd internals shared by its source files: the parameters (struct
 * nkd_config), the runtime registry of NSMs and VMs (struct nkd), the typed
 * epoll references, and the functions each part exports to the others.
 *
 *   nkd.c        main, options, the epoll loop, signals, daemonizing
 *   nkd_ctl.c    the nkctl control socket: JSON requests and replies
 *   nkd_nsm.c    NSM objects: spawn, adopt, supervise, nsmctl messages
 *   nkd_vm.c     VM objects: validation, hybrid-vsock listeners, AF_VSOCK
 *   nkd_state.c  nkd.json: save after every change, restore at start
 *   nkd_steer.c  XDP steering on the uplink: programs, pinned maps, stats
 *   nkd_link.c   namespaces and veth pairs of the NSMs nkd creates
 *   nkd_conn.c   the connection table (conn list), asked of every NSM
 *   nkd_move.c   graceful VM moves: flows pinned to the old NSM, drains
 *
 * Error convention: int functions return 0 or -errno; a caller-supplied
 * struct nkd_err receives the one-line message shown to the operator.
 */
#ifndef NKD_H
#define NKD_H

#include <limits.h>
#include <net/if.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include <jansson.h>
#include <netkernel/nsmctl.h>
#include <netkernel/proto.h>
#include <netkernel/steer.h>

#include "steer_maps.h"

#define NKD_DEFAULT_CONTROL	"/run/netkernel/nkd.sock"
#define NKD_DEFAULT_STATE_DIR	"/var/lib/netkernel"
#define NKD_DEFAULT_RUN_DIR	"/run/netkernel"
#define NKD_STATE_FILE		"nkd.json"

#define NKD_NSM_MAX		256
#define NKD_CLIENT_MAX		64
#define NKD_VM_ID_MAX		65535
#define NKD_CTL_MSG_MAX		(8u << 20)	/* one nkctl request or reply */
#define NKD_NETNS_MAX		64
#define NKD_NETNS_PREFIX	"nk-"	/* netns of an NSM nkd creates: nk-NAME */
#define NKD_HOSTDEV_PREFIX	"nkh-"	/* host side of its veth: nkh-NAME */
#define NKD_NSM_DEV		"eth0"	/* NSM side of its veth */

/* Supervision timings (milliseconds). */
#define NKD_NSM_START_MS	5000	/* spawn -> HELLO */
#define NKD_NSM_RETRY_MS	50	/* connect retry period */
#define NKD_NSM_REPLY_MS	3000	/* one nsmctl request -> REPLY */
#define NKD_NSM_STREAM_MS	10000	/* ... with batches before it, in all */
#define NKD_NSM_EVENT_MSGS	64	/* an NSM's messages handled per wakeup */
#define NKD_CONN_LIST_MAX	(1 << 18)	/* connections one CONN_LIST may list */
#define NKD_NSM_TERM_MS		2000	/* SIGTERM -> SIGKILL on nsm del */
#define NKD_BACKOFF_MIN_MS	200
#define NKD_BACKOFF_MAX_MS	5000
#define NKD_RESTART_BURST	10	/* restarts allowed ...        */
#define NKD_RESTART_WINDOW_MS	60000	/* ... within this window      */

/* Typed epoll references: the type in the high half, a slot in the low. */
enum nkd_ep_type {
	EP_NONE = 0,
	EP_SIGNAL,		/* signalfd */
	EP_CTL_LISTEN,		/* nkctl control socket */
	EP_CLIENT,		/* one nkctl connection; idx = client slot */
	EP_NSM_CTL,		/* control connection to an NSM; idx = nsm slot */
	EP_NSM_TIMER,		/* per-NSM timerfd; idx = nsm slot */
	EP_VSOCK,		/* the AF_VSOCK listener for cid VMs */
	EP_MOVE_TIMER,		/* prune period of VMs draining from an old NSM */
};

union nkd_ep_ref {
	struct {
		uint32_t type;
		uint32_t idx;
	};
	uint64_t u64;
};

struct nkd_err {
	char msg[512];
};

/* Format the operator-facing message; returns -err (err positive). */
int nkd_fail(struct nkd_err *e, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Parameters: from the command line, never changed afterwards. */
struct nkd_config {
	const char *config_file;
	const char *control;
	const char *state_dir;
	const char *run_dir;
	const char *nsm_bin;	/* resolved absolute path */
#define NKD_NSM_ARGS_MAX 8
	const char *nsm_args[NKD_NSM_ARGS_MAX];	/* --nsm-arg, appended to every NSM's */
	int n_nsm_args;
	bool foreground;
	bool verbose;
	bool no_vsock;
	/* XDP steering: from the command line, else from the state file */
	const char *uplink;	/* NULL: no steering */
	const char *pin_dir;
	int miss;		/* enum nk_miss_action; -1: not given */
	bool uplink_cmdline, pin_dir_cmdline;
};

enum nsm_state {
	NSM_STARTING,		/* spawned or reconnecting; waiting for HELLO */
	NSM_RUNNING,		/* HELLO seen, configuration pushed */
	NSM_RESTARTING,		/* dead; backoff timer armed */
	NSM_FAILED,		/* gave up (or could not start at all) */
};

struct nkd_client;

struct nkd_nsm {
	int slot;
	char name[NK_NAME_MAX];
	char type[16];
	char netns[NKD_NETNS_MAX];
	char dev[IFNAMSIZ];
	bool kernel_relay;	/* relay "kernel": nk-nsm --kernel-relay */
	unsigned int busy_poll_us; /* busy_poll: nk-nsm --busy-poll=USEC */
	unsigned int bulk_poll_us; /* bulk_poll: nk-nsm --bulk-poll=USEC */
	long kernel_relay_sndbuf;	/* kernel_relay_sndbuf: nk-nsm --kernel-relay-sndbuf=BYTES */
	long notsent_lowat;	/* notsent_lowat: nk-nsm --notsent-lowat=BYTES */
	/* created by nkd on the uplink (no netns given): steered by XDP */
	bool managed;
	char hostdev[IFNAMSIZ];	/* host side of its veth */
	int host_ifindex;	/* 0: not set up */
	enum nk_xdp_mode egress_mode;
	int netns_id;		/* its nsid in nkd's netns; -1: not known (nsm_netns) */

	enum nsm_state state;
	pid_t pid;		/* 0: none known */
	bool child;		/* we spawned it: SIGCHLD tells us it died */
	bool adopted;		/* found running at start-up */
	bool run_known;		/* run: its HELLO said (a newer nk-nsm) */
	struct nsm_hello_run run;	/* the settings it runs with */
	struct nsm_hello_run2 run2;	/* ... more of them; notsent_lowat -1: not said */
	bool config_differs;	/* run is not as the settings say */
	int ctl_fd;		/* SOCK_SEQPACKET to its control socket */
	int timer_fd;
	uint32_t seq;
	uint64_t deadline;	/* STARTING: give up at (nkd_now_ms) */
	unsigned int restarts;	/* total, since nkd started */
	uint64_t restart_at[NKD_RESTART_BURST];	/* ring of recent restarts */
	unsigned int restart_head;
	char reason[160];	/* last failure, for "nsm show" */
	struct nkd_client *waiter;	/* "nsm add" waiting for the first HELLO */
	bool dead;		/* unlinked from the registry; freed by the loop */
};

struct nkd_vm {
	char name[NK_NAME_MAX];
	uint32_t id;
	struct nkd_nsm *nsm;
	uint32_t naddrs;
	struct nsm_vm_addr addrs[NK_VM_ADDRS_MAX];
	struct nk_addr gw4, gw6;
	char *uds;		/* PATH as given, or NULL */
	char *listen_path;	/* PATH_7531 */
	dev_t listen_dev;	/* the socket file nkd bound there, removed */
	ino_t listen_ino;	/* only while it is still that file */
	uint32_t cid;		/* 0: not a vsock VM */
	int listen_fd;		/* nkd keeps its copy: survives NSM restarts */
	bool drop_all;		/* policy: the uplink drops its frames both ways */
	char error[160];	/* last push failure, for "vm show" */
	struct nkd_vm *next;
};

struct nkd {
	struct nkd_config cfg;
	int epfd;
	int sig_fd;
	int ctl_fd;
	int vsock_fd;
	bool stop;
	struct nkd_nsm *nsms[NKD_NSM_MAX];
	struct nkd_vm *vms;	/* list, in creation order */
	unsigned int nvms;
	struct nkd_client *clients[NKD_CLIENT_MAX];
	/* XDP steering (NULL without an uplink) */
	struct nk_steer *steer;
	int uplink_ifindex;
	enum nk_xdp_mode uplink_mode;
	bool restoring;		/* state_load() of nkd.json: newer rules warn */
	bool reloading;		/* state_reload(): adopted NSMs pruned after */
};

extern struct nkd nkd;

/* nkd.c */
int nkd_ep_add(int fd, enum nkd_ep_type type, uint32_t idx, uint32_t events);
void nkd_ep_del(int fd);
uint64_t nkd_now_ms(void);
/* Copy with truncation; dst is always terminated. */
void nkd_strscpy(char *dst, const char *src, size_t size);
bool nkd_name_valid(const char *s, size_t max);

/* nkd_ctl.c */
int nkd_ctl_open(void);
void nkd_ctl_accept(void);
void nkd_client_event(uint32_t idx, uint32_t events);
/* Answer a client whose request was deferred (nsm add). */
void nkd_client_reply(struct nkd_client *c, json_t *result, const struct nkd_err *e);
/* Write nkd.json, then answer a deferred request's success; a state file
 * that cannot be written is a warning in that reply. */
void nkd_client_reply_saved(struct nkd_client *c, json_t *result);
void nkd_client_forget_nsm(struct nkd_client *c);

/* nkd_nsm.c */
struct nkd_nsm *nsm_find(const char *name);
void nsm_defaults(struct nkd_nsm *out);
int nsm_config_parse(json_t *obj, struct nkd_nsm *out, bool check_env, struct nkd_err *e);
int nsm_config_check(json_t *obj, const struct nkd_nsm *self, struct nkd_err *e);
int nsm_create(const struct nkd_nsm *tmpl, bool start, struct nkd_nsm **out,
	       struct nkd_err *e);
int nsm_start(struct nkd_nsm *nsm, struct nkd_err *e);
int nsm_delete(struct nkd_nsm *nsm, struct nkd_err *e);
void nsm_abandon(struct nkd_nsm *nsm, const char *why);
void nsm_ctl_event(uint32_t idx, uint32_t events);
void nsm_timer_event(uint32_t idx);
void nsm_sigchld(void);
void nsm_resync_all(void);
void nsm_sweep(void);
/* Send one request; with nsm_err, wait for the REPLY and store its errno
 * there.  0 or -errno of the exchange itself (-ENOTCONN, -ETIMEDOUT...). */
int nsm_request(struct nkd_nsm *nsm, uint8_t type, const void *body, size_t len,
		int fd, int *nsm_err);
/*
 * A listing the NSM streams (CONN_LIST, VM_LIST): request req with body,
 * answered by packets of type batch ({u32 n; u32 pad0; n entries of esize
 * bytes}, 1..per a packet) and a REPLY.  At most max entries in all, into
 * *out (free() it), their count in *n.  0, or -errno: of the exchange, of
 * the NSM's REPLY, -EOVERFLOW (more than max) or -ENOMEM.
 */
struct nsm_listing {
	uint8_t req, batch;
	size_t esize;
	uint32_t per;
	size_t max;
};
int nsm_collect(struct nkd_nsm *nsm, const struct nsm_listing *ls, const void *body, size_t len,
		void **out, size_t *n);
int nsm_push_vms(struct nkd_nsm *nsm);
void nsm_prune_strays(struct nkd_nsm *nsm);
json_t *nsm_vm_ids(struct nkd_nsm *nsm);
bool state_drain_pending(const char *vm, const char *nsm);
unsigned int nsm_vm_count(const struct nkd_nsm *nsm);
const char *nsm_state_name(enum nsm_state s);
json_t *nsm_to_json(const struct nkd_nsm *nsm, bool full);
json_t *run_to_json(const struct nkd_nsm *nsm);

/* nkd_vm.c */
struct nkd_vm *vm_find(const char *name);
int vm_config_parse(json_t *obj, struct nkd_vm *out, struct nkd_err *e);
int vm_config_parse_for(json_t *obj, const struct nkd_vm *self, struct nkd_vm *out,
			struct nkd_err *e);
void vm_id_reserve(uint32_t id, bool on);
int vm_conflicts(const struct nkd_vm *t, struct nkd_err *e);
int vm_policy_parse(const char *name, json_t *pol, bool *drop_all, struct nkd_err *e);
int vm_create(const struct nkd_vm *tmpl, bool push, struct nkd_vm **out,
	      struct nkd_err *e);
int vm_delete(struct nkd_vm *vm, struct nkd_err *e);
int vm_move(struct nkd_vm *vm, struct nkd_nsm *to, struct nkd_err *e);
void vm_forget(struct nkd_vm *vm);
int vm_push(struct nkd_vm *vm, struct nkd_err *e);
int vm_open_listener(struct nkd_vm *vm, struct nkd_err *e);
void vm_resync_all(void);
void vm_free(struct nkd_vm *vm);
json_t *vm_to_json(const struct nkd_vm *vm, bool state);
void vsock_accept(void);
int vsock_update(void);

/* nkd_steer.c: every function is a no-op (0) when nkd has no uplink */
int steer_start(void);
bool steer_nsm_steered(const struct nkd_nsm *nsm);
int steer_nsm_up(struct nkd_nsm *nsm, struct nkd_err *e);
void steer_nsm_down(struct nkd_nsm *nsm);
int steer_vm_add(struct nkd_vm *vm, struct nkd_err *e);
int steer_vm_policy_change(struct nkd_vm *vm, bool drop_all, struct nkd_err *e);
void steer_vm_del(struct nkd_vm *vm);
void steer_sync(void);
void steer_resync(void);
int steer_stats(json_t *args, json_t **res, struct nkd_err *e);
json_t *steer_teardown(void);
const char *steer_miss_name(int miss);

/* nkd_conn.c */
/* The connections of vm_id (0: all) on nsm; *out is malloc'd. */
int conn_collect(struct nkd_nsm *nsm, uint32_t vm_id, struct nsm_conn **out, size_t *n);
json_t *conn_to_json(const struct nkd_nsm *nsm, const struct nsm_conn *c);
int conn_list(json_t *args, json_t **res, json_t *warnings, struct nkd_err *e);

/* nkd_move.c */
bool move_graceful_possible(const struct nkd_vm *vm, const struct nkd_nsm *to);
void move_arrived(const struct nkd_vm *vm, const struct nkd_nsm *to);
int move_redrain(const struct nkd_vm *vm, struct nkd_nsm *nsm);
int move_graceful(struct nkd_vm *vm, struct nkd_nsm *to, struct nkd_err *e);
bool move_draining_on(const struct nkd_vm *vm, const struct nkd_nsm *nsm);
bool move_nsm_draining(const struct nkd_nsm *nsm);
void move_forget_vm(const struct nkd_vm *vm);
void move_forget_nsm(const struct nkd_nsm *nsm);
void move_timer_event(void);
void move_claim_queue(const struct nkd_nsm *from, const void *body, size_t len, int fd);
void move_claims_run(void);
json_t *move_to_json(void);
void move_restore(json_t *arr);
void move_steer_sync(void);

/* nkd_link.c */
int netns_open(const char *name);
/* Its id (nsid) in nkd's netns, allocated if it has none.  0 or -errno. */
int netns_id(const char *name, int *id);
int netns_create(const char *name);
int netns_delete(const char *name);
int link_delete(const char *ifname);
int link_nsm_veth(struct nkd_nsm *nsm, struct nkd_err *e);
/* Gratuitous ARP / unsolicited NA for the VM's addresses, from the NSM. */
void link_announce(const struct nkd_nsm *nsm, const struct nkd_vm *vm);
/* The MAC of the NSM's device (in its netns).  0 or -errno. */
int link_nsm_mac(const struct nkd_nsm *nsm, uint8_t mac[6]);
int link_nsm_local(const struct nkd_nsm *nsm);
int link_nsm_reserved_ports(const struct nkd_nsm *nsm, const char *list);

/* nkd_state.c */
int state_save(void);
/* Phase 1: validate and register (and read the steering keys). */
int state_load(const char *path, bool required);
void state_load_drains(const char *path);
int state_check_top(const char *path, json_t *root);
/* Phase 2: listeners, steering, NSMs started or adopted. */
void state_apply(const char *path);
/* SIGHUP with --config: apply the file's difference to the running set. */
void state_reload(void);

#endif /* NKD_H */
