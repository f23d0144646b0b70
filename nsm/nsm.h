/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * nk-nsm internals: the kernel Network Stack Module's state, shared by its
 * files (main.c: the loop; control.c: nkd's requests; netlink.c: addresses,
 * routes and rules; chan.c: guest streams and their messages; sock.c: the
 * guest socket operations; relay.c: TCP data mode; dgram.c: UDP datagrams).
 *
 * Theory of operation
 * -------------------
 * One thread runs one epoll loop.  Every registered fd carries a typed
 * reference (enum ep_type + the fd) in epoll_data; a table indexed by fd
 * maps it to the object that owns it, and the loop is a switch on the
 * type.  Objects are never closed or freed while a batch of events is
 * being handled: killing one unregisters its fds and clears their table
 * slots at once (so stale events of the same batch find nothing), and
 * queues the fds and memory for the reaper that runs after the batch.  So
 * an fd number cannot be reused inside a batch and a pointer held on the
 * stack stays valid until the handler returns (check ->dead).
 *
 * A VM (struct vm) is what nkd adds: an id, a name, its addresses.  Every
 * guest stream, whatever its kind, is a struct chan of that VM; a guest
 * socket (struct nsock) owns the chan that is its stream and the real
 * kernel socket(s) that do its work.  Control channels (HELLO CTL) own no
 * socket: they name sockets by token, looked up among their VM's sockets.
 * A UDP guest socket (HELLO SOCKET type DGRAM) is in data mode from its
 * HELLO on: its stream carries framed datagrams (struct udp, dgram.c).
 */
#ifndef NSM_H
#define NSM_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <netinet/in.h>

#include <netkernel/proto.h>
#include <netkernel/nsmctl.h>

#include "list.h"
#include "log.h"

#define NSM_HELLO_TIMEOUT	5	/* s for a new stream to say HELLO */
#define NSM_EVENT_BATCH		64	/* events taken from epoll at once */
/* every HELLO flag this NSM takes, in each HELLO reply (nk_hello_rep) */
#define NSM_HELLO_FLAGS		(NK_HELLO_F_SETUP | NK_HELLO_F_OFFER | NK_HELLO_F_QUIET | \
				 NK_HELLO_F_POST)
#define NSM_PENDING_TIMEOUT	30	/* s an announced connection waits */
#define NSM_ORPHAN_GRACE	5	/* s an offer outlives its listener (claim in flight) */
/* An offer whose listener a drain closed (the guest's listener lives on)
 * waits as if its listener were open: NSM_PENDING_TIMEOUT from its offer. */
#define NSM_ORPHANS_MAX		4096	/* per VM; the oldest go first */
#define NSM_TOMB_MAX		4096	/* remembered ended streams */
#define NSM_BULK_BATCH		(16 << 10) /* one connection's burst that counts as bulk */
#define NSM_BULK_HOLD_NS	1000000	/* payload holds the window this long after a burst */
#define NSM_TOMB_AGE		60	/* s a tombstone is kept */
#define NSM_BACKLOG_MAX		4096	/* cap of a guest listener's queue */
#define NSM_SAVED_OPTS		40	/* options remembered per socket */
#define NSM_SAVED_OPT_LEN	64	/* no settable option is larger */
#define NSM_CHAN_OUTQ_MAX	65536	/* stop reading requests above this */
/* A control channel reads ahead: room for more than one request, so that
 * a read that comes back short was the last one for now. */
#define NSM_CTL_AHEAD		(4 * NK_MSG_MAX)
#define NSM_SETUP_REQS_MAX	64	/* pipelined set-up requests per socket stream */
#define NSM_PIPE_SIZE		(256 * 1024)	/* a relay pipe at first ... */
#define NSM_PIPE_SIZE_BULK	(1024 * 1024)	/* ... once it filled up */
#define NSM_RELAY_BUF		65536	/* read/write fallback buffer */
#define NSM_STREAM_SNDBUF_MAX	(4 << 20)	/* cap of a guest stream's send buffer */
#define NSM_DGRAM_FRAME_MAX	(sizeof(struct nk_dgram_hdr) + NK_DGRAM_MAX)
#define NSM_DGRAM_BUF		(2 * NSM_DGRAM_FRAME_MAX)	/* one read of frames */
#define NSM_DGRAM_BATCH		64	/* datagrams per socket per wake-up */
#define NSM_DGRAM_RBATCH	16	/* datagrams per recvmmsg() */
#define NSM_DGRAM_QUEUE		65536	/* frames kept for a full stream */

enum ep_type {
	EP_NONE = 0,
	EP_SIGNAL,	/* signalfd: SIGTERM, SIGINT */
	EP_TIMER,	/* timerfd: 1 s housekeeping tick */
	EP_CTL_LISTEN,	/* the --control listening socket */
	EP_CTL_CONN,	/* nkd's connection to it */
	EP_VM_LISTEN,	/* a VM's attached guest listener (obj: vm) */
	EP_CHAN,	/* a guest stream (obj: chan) */
	EP_TCP,		/* a guest socket's real socket (obj: nsock) */
	EP_TCP_LISTEN,	/* one real listening socket (obj: nsock) */
	EP_UDP,		/* one real UDP socket of a guest socket (obj: nsock) */
	EP_TYPE_MAX
};

/* What travels in epoll_data: the type and the fd. */
union nsm_ref {
	struct {
		uint32_t type;
		int32_t fd;
	};
	uint64_t u64;
};

/* One slot per fd number. */
struct fdent {
	void *obj;
	uint32_t events;	/* as registered */
	uint8_t type;		/* enum ep_type; EP_NONE: not registered */
	bool twin;		/* received from nkd, which holds the same file */
};

struct vm {
	struct list_head node;		/* nsm.vms */
	uint32_t id;
	char name[NK_NAME_MAX];
	uint32_t naddrs;
	struct nsm_vm_addr addrs[NK_VM_ADDRS_MAX];
	struct nk_addr gw4, gw6;
	/* addresses this process put on --dev for the VM (nl_addr() said 0);
	 * others are removed only when they carry NSM_IFA_PROTO */
	struct nk_addr added[NK_VM_ADDRS_MAX];
	uint32_t nadded;
	int lfd;			/* attached guest listener, or -1 */
	int ldomain;			/* its socket domain (AF_UNIX), -1: unknown */
	struct list_head chans;		/* every guest stream of the VM */
	struct list_head socks;		/* every guest socket of the VM */
	struct list_head orphans;	/* offered connections whose listener closed */
	unsigned int norphans;
	bool drained;			/* VM_DRAIN, no guest listener since */
	uint64_t fwd_until;		/* now_mono(): unknown claims go to nkd until then */
	unsigned int nfwd;		/* claims passed on (at most NSM_CLAIM_FWD_MAX) */
	/* counters */
	uint64_t bad_chans;
	uint64_t streams;		/* guest streams accepted */
	uint64_t conns;			/* connections that reached data mode */
	uint64_t bytes_up;		/* guest -> network */
	uint64_t bytes_down;		/* network -> guest */
	uint64_t dgrams_up;		/* datagrams sent for the guest */
	uint64_t dgrams_down;		/* datagrams passed to the guest */
	uint64_t dgram_drops_up;	/* not sent: refused or send error */
	uint64_t dgram_drops_down;	/* not passed: the guest's stream was full */
	uint64_t log_sec;		/* rate limit of guest-triggered lines */
	uint32_t log_count;
	unsigned int nsocks;		/* in socks */
	bool dead;
};

enum chan_mode {
	CH_HELLO,	/* waiting for the HELLO request */
	CH_CTL,		/* control channel */
	CH_SOCK,	/* a socket's stream (struct nsock owns it) */
	CH_DRAIN,	/* final reply queued; closed once written */
};

struct outq {
	uint8_t *buf;
	size_t off, len, cap;
};

static inline size_t outq_bytes(const struct outq *q)
{
	return q->len - q->off;
}

struct chan {
	struct list_head vm_node;	/* vm.chans */
	struct list_head wait_node;	/* nsm.hello_wait while CH_HELLO */
	struct vm *vm;
	int fd;
	enum chan_mode mode;
	uint32_t pid;			/* from HELLO, informational */
	uint64_t deadline;		/* CH_HELLO: monotonic s */
	uint8_t in[NK_MSG_MAX];		/* one message: payload may follow it */
	uint32_t inlen;			/* of in, or of ahead on a control channel */
	uint8_t *ahead;			/* CH_CTL: NSM_CTL_AHEAD, chan_read_ctl() */
	struct outq out;
	struct nsock *ns;		/* CH_SOCK */
	bool splice_ok;			/* AF_UNIX: relay with splice */
	bool refuse;			/* took the reserve descriptor: vm_accept() */
	bool setup_reqs;		/* CH_SOCK: SETSOCKOPT/CONNECT may follow HELLO */
	bool corked;			/* replies queue until chan_read() ends */
	bool posts;			/* CH_CTL: NK_HELLO_F_POST, posted requests */
	uint32_t nsetup;		/* set-up requests read so far */
	int setup_err;			/* first failed set-up SETSOCKOPT, errno */
	bool dead;
};

struct saved_opt {
	int level, name;
	uint32_t len;
	uint8_t val[NSM_SAVED_OPT_LEN];
};

/* A connection accepted on a guest listener, waiting for HELLO ACCEPT. */
struct pending {
	struct list_head node;
	uint64_t conn_id;
	struct nsock *ns;		/* offered (NK_HELLO_F_OFFER), else NULL */
	uint64_t listener;		/* orphaned: the closed listener's token */
	int fd;
	uint64_t since;			/* monotonic s */
	uint64_t expires;		/* orphaned: monotonic s it is closed at */
	struct nk_addr local, peer;
};

/* One direction of the relay: source -> pipe (or buffer) -> destination. */
struct rdir {
	int pipe[2];			/* splice mode; -1 in buffer mode */
	uint8_t *buf;			/* buffer mode */
	size_t off, len, cap;		/* bytes held: len */
	bool src_eof;			/* the source read 0 */
	bool blocked;			/* splice-in EAGAIN with len > 0 */
	bool src_ready;			/* source may have data (epoll said so) */
	bool dst_ready;			/* destination may take data */
	bool done;			/* EOF passed on (shutdown of dst) */
	bool grow_tried;		/* dir_grow() ran */
	bool no_pipe;			/* pipe2() said EMFILE/ENFILE: a buffer */
	int src_err;			/* errno of the read that failed, 0 */
	uint64_t bytes;
};

struct relay {
	struct rdir up;			/* guest stream -> tcp */
	struct rdir down;		/* tcp -> guest stream */
	bool g_closed;			/* guest stream hung up or EPIPE */
	int g_sndbuf;			/* the stream's send buffer, 0: not read */
	uint64_t g_next_look;		/* down.bytes at which stream_grow looks again */
	bool g_unreg, t_unreg;		/* out of epoll after HUP (relay_update) */
	int t_err;			/* the TCP side failed (tcp_failed) */
	bool own_lowat;			/* TCP_NOTSENT_LOWAT is ours, not the guest's */
	struct nsock *ns;
	/* up relayed in the kernel (krelay.c): */
	bool kup;
	bool kdraining;			/* guest EOF waits for the TCP socket */
	uint32_t kslot;			/* in relay_guest and relay_tcp */
	uint64_t kcookie;		/* of our end of the guest stream */
	uint64_t kbase;			/* TCP bytes written before */
	uint64_t kbytes_done;		/* moved by the kernel, counted at stop */
	uint64_t knext_ms;		/* draining: next look (monotonic ms) */
	uint32_t kdelay_ms;		/* draining: 1, 2, 4 ... 128 ms */
	struct list_head knode;		/* krelay's draining list */
};

/*
 * The data side of a UDP guest socket.  up: frames from the guest stream
 * -> sendto(); what was read but not sent yet (a partial frame, or frames
 * behind one that met EAGAIN) waits in pend.  down: recvmmsg() -> one
 * frame per datagram on the stream (dgram.c).
 */
struct udp {
	uint8_t *pend;			/* up bytes kept between wake-ups */
	size_t plen;
	int blocked_fd;			/* sendto() said EAGAIN on it, or -1 */
	bool up_eof;			/* the guest stream read EOF */
	bool g_hup;			/* ... and hung up (the guest closed it) */
	bool g_unreg;			/* stream taken out of epoll after HUP */
	bool down_paused;		/* stream full: real sockets not read */
	bool down_closed;		/* the guest reads no more (EPIPE) */
	int err_held;			/* an error met while the stream was
					 * full: the latest, sent once it drains */
	uint64_t dgrams_up, dgrams_down, bytes_up, bytes_down;
	uint64_t drops_up, drops_down;
};

struct nsock {
	struct list_head vm_node;	/* vm.socks */
	struct nsock *hnext;		/* token hash chain */
	uint64_t token;
	struct vm *vm;
	struct chan *chan;		/* the guest stream */
	int family;			/* AF_INET or AF_INET6 */
	int type;			/* SOCK_STREAM or SOCK_DGRAM */
	enum nk_sock_state state;	/* SETUP .. LISTENING */
	int fd;				/* real socket, -1: re-create */
	/* bind */
	bool bound;			/* explicitly (BIND) or by LISTEN */
	bool autobound;			/* by CONNECT or a first datagram */
	bool wildcard;			/* bound to 0.0.0.0 / :: */
	bool v6only;			/* IPV6_V6ONLY as it was before bind */
	bool sndbuf_set;		/* the guest chose SO_SNDBUF (a listener's: inherited) */
	bool lowat_set;			/* ... TCP_NOTSENT_LOWAT (likewise) */
	bool cork_on;			/* TCP_CORK is on on the real socket */
	bool cork_wait;			/* a posted TCP_CORK on waits (relay_cork_post()) */
	struct nk_addr bind_addr;	/* real address bound, requested port */
	struct nk_addr connect_to;	/* CONNECT's address (the peer while connecting) */
	/* options set by the guest, replayed on sockets created later */
	int nopts;
	struct saved_opt *opts;
	/* listener; UDP: extra sockets receiving on other VM addresses */
	struct nk_addr listen_local;	/* fd's local address, listening */
	int *lfds;			/* extra listening sockets */
	struct nk_addr *laddrs;		/* the address each is bound to */
	int nlfds;
	int pending_max;
	int npending;
	bool accept_paused;
	bool offer;			/* announce with ACCEPT_OFFER records */
	bool guest_early;		/* the guest may write before the relay */
	uint64_t next_conn_id;
	struct list_head pending;
	/* data mode */
	struct relay *relay;
	struct udp *udp;		/* SOCK_DGRAM */
	int end_err;			/* for the tombstone */
	bool counted;			/* in vm->nsocks and nsm.nsocks */
	bool dead;
};

struct tomb {
	uint64_t token;
	uint64_t when;			/* monotonic s */
	uint32_t vm_id;
	int32_t err;
};

struct nsm_config {
	const char *name;
	const char *type;
	const char *dev;
	const char *control;
	bool verbose;
	bool no_splice;			/* relay through buffers (vsock's path) */
	bool kernel_relay;		/* in-kernel relay of the up direction (krelay.c) */
	long krelay_sndbuf;		/* --kernel-relay-sndbuf: its TCP sockets' send buffer */
	int notsent_lowat;		/* --notsent-lowat: the relay's TCP sockets' */
	unsigned int busy_poll_us;	/* --busy-poll: spin this long after events */
	unsigned int bulk_poll_us;	/* --bulk-poll: spin this long after bulk batches */
	bool bulk_poll_auto;		/* --bulk-poll=auto (the default): bulk_poll_us from */
	unsigned int wake_ns;		/* ... this round trip, measured at start */
};

struct nsm {
	struct nsm_config cfg;
	uint32_t instance;		/* nsm_id in HELLO replies: random, not 0 */
	int epfd;
	int sigfd;
	int timerfd;
	int ctl_lfd;			/* --control listener */
	int ctl_fd;			/* nkd, or -1 */
	int ifindex;			/* of --dev, 0 until found */
	struct mnl_socket *nl;
	uint32_t nl_seq, nl_portid;
	struct fdent *fdtab;
	int fdtab_len;
	struct list_head vms;
	struct list_head hello_wait;
	/* token -> nsock */
	struct nsock **htab;
	uint32_t hsize, hcount;
	struct tomb tombs[NSM_TOMB_MAX];
	uint32_t tomb_next;
	/* the reaper's queues */
	int *grave_fds;
	size_t ngrave_fds, grave_fds_cap;
	void **grave_mem;
	size_t ngrave_mem, grave_mem_cap;
	unsigned int nsocks;		/* guest sockets of every VM */
	uint64_t moved;			/* payload bytes relayed in user space, ever */
	bool burst;			/* a connection relayed NSM_BULK_BATCH at once */
	bool stop;
};

/* The daemon's one instance (one per process). */
extern struct nsm nsm;

/* main.c: epoll registry and the reaper */
uint64_t now_mono(void);		/* monotonic s */
uint64_t mono_ns(void);		/* monotonic ns */
int ep_add(int fd, enum ep_type type, void *obj, uint32_t events);
int ep_set(int fd, uint32_t events);	/* no-op when unchanged */
void ep_del(int fd);
void ep_twin(int fd);			/* fd came from nkd: see close_later() */
void close_later(int fd);
void close_now(int fd);			/* close(), turning a linger time off */
int fd_may_linger(int fd);		/* fd may get SO_LINGER with a time */
bool fd_lingers(int fd);
void linger_off(int fd);
void free_later(void *p);

/* control.c */
int ctl_listen(void);
void ctl_unlink(void);
void ctl_accept(void);
void ctl_event(uint32_t events);
bool ctl_claim_forward(struct chan *ch, const struct nk_hdr *h, const struct nk_hello_req *req);
struct vm *vm_find(uint32_t id);

/* netlink.c */
int nl_open(void);
void nl_close(void);
int nl_link_up(void);
/* IFA_PROTO of the VM addresses an NSM adds (Linux 5.18 on): an address
 * on --dev without it is not an NSM's (an operator's), and stays. */
#define NSM_IFA_PROTO	0x4e
int nl_addr(bool add, const struct nsm_vm_addr *a);
int nl_addr_proto(const struct nsm_vm_addr *a);
int nl_route(bool add, uint32_t table, const struct nk_addr *dst, int prefix,
	     const struct nk_addr *gw);
int nl_rule(bool add, uint32_t table, uint32_t prio, const struct nk_addr *src);
int sysctl_write(const char *path, const char *val);

/* chan.c */
struct chan *chan_new(struct vm *vm, int fd, int domain);
void chan_kill(struct chan *ch);
void chan_bad(struct chan *ch, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void chan_event(struct chan *ch, uint32_t events);
int chan_send(struct chan *ch, uint8_t op, uint32_t seq, int32_t err,
	      const void *body, size_t len);
int chan_flush(struct chan *ch);
int chan_queue(struct chan *ch, const void *p, size_t len);
void chan_update_events(struct chan *ch);
void chan_claim(struct chan *ch, const struct nk_hdr *h, const struct nk_hello_req *req);
void chan_timeouts(uint64_t now);
void vm_accept(struct vm *vm);
void nsm_reserve_fd(void);
bool nsm_fd_room(void);

/* The NSM's descriptor table (or the system's) is full. */
static inline bool out_of_fds(int err)
{
	return err == EMFILE || err == ENFILE;
}

/* sock.c */
struct nsock *nsock_new(struct vm *vm, struct chan *ch, int family, int fd);
struct nsock *nsock_lookup(struct vm *vm, uint64_t token);
void nsock_kill(struct nsock *ns, int err);
void nsock_event(struct nsock *ns, uint32_t events);
void nsock_chan_event(struct nsock *ns, uint32_t events);
void nsock_listen_event(struct nsock *ns, int lfd);
void nsock_timeouts(uint64_t now);
int nsock_hello_socket(struct chan *ch, const struct nk_hello_req *req, uint64_t *token);
int nsock_hello_accept(struct chan *ch, const struct nk_hello_req *req, uint32_t seq);
bool nsock_claim_known(struct vm *vm, const struct nk_hello_req *req);
int nsock_udp_fd(struct nsock *ns, const struct nk_addr *dst, int *fd);
bool nsock_dst_refused(const struct nk_addr *a);
int nsock_sockaddr(const struct nk_addr *a, struct sockaddr_storage *ss);
void nsock_setup_request(struct chan *ch, const struct nk_hdr *h, const void *body);
int ctl_request(struct chan *ch, const struct nk_hdr *h, const void *body);
void tomb_add(uint64_t token, uint32_t vm_id, int err);
void vm_kill_sockets(struct vm *vm);

/* relay.c */
int relay_prepare(struct nsock *ns);
bool relay_pool_drain(void);
void relay_start(struct nsock *ns);
void relay_kick(struct nsock *ns);
void relay_sync_up(struct nsock *ns);
bool relay_cork_post(struct nsock *ns, bool on);
void relay_free(struct nsock *ns);
int krelay_init(void);
bool krelay_enabled(void);
int krelay_start(struct nsock *ns);
void krelay_stop(struct nsock *ns);
int krelay_drained(struct nsock *ns);
uint64_t krelay_bytes(const struct nsock *ns);
int krelay_wait_ms(void);
void krelay_poll(void);
void relay_update(struct nsock *ns);
void relay_event_guest(struct nsock *ns, uint32_t events);
void relay_event_tcp(struct nsock *ns, uint32_t events);
void relay_shut_rd(struct nsock *ns);

/* dgram.c */
int udp_start(struct nsock *ns);
void udp_free(struct nsock *ns);
void udp_update(struct nsock *ns);
void udp_kick(struct nsock *ns);
void udp_sync_up(struct nsock *ns);
void udp_event_guest(struct nsock *ns, uint32_t events);
void udp_event_sock(struct nsock *ns, int fd, uint32_t events);
void udp_fd_closed(struct nsock *ns, int fd);

/* A line caused by what a guest sent: at most NSM_GUEST_LOG_RATE a second
 * per VM, so that a misbehaving guest cannot flood the log. */
#define NSM_GUEST_LOG_RATE	20
void vm_glog(struct vm *vm, enum nk_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Log helpers naming the VM. */
#define vm_info(vm, fmt, ...)	info("vm %s: " fmt, (vm)->name, ##__VA_ARGS__)
#define vm_warn(vm, fmt, ...)	warn("vm %s: " fmt, (vm)->name, ##__VA_ARGS__)
#define vm_debug(vm, fmt, ...)	debug("vm %s: " fmt, (vm)->name, ##__VA_ARGS__)

#endif /* NSM_H */
