// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * nkctl's command line: the command table (cmds[]), the usage text
 * generated from it, and the parser that turns argv into one request for
 * nkd (nkctl_args_parse()).  No socket here: nkctl.c sends the request;
 * ctl/fuzz_nkctl_args.c feeds this file arbitrary command lines.
 *
 * Every word the parser accepts reaches the request as given, or the
 * command line is refused: a value jansson cannot carry (not UTF-8) is a
 * usage error, never a key silently left out.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nkctl.h"
#include "nkd.h"

#define EXIT_ERR	NKCTL_EXIT_ERR
#define EXIT_USAGE	NKCTL_EXIT_USAGE

static const struct nkctl_kw nsm_add_kw[] = {
	{ "type", "TYPE", "type", KW_REQ },
	{ "netns", "NETNS", "netns", 0 },
	{ "dev", "IFNAME", "dev", KW_JOIN },
	{ "relay", "splice|kernel", "relay", 0 },
	{ "busy-poll", "USEC", "busy_poll", 0 },
	{ "bulk-poll", "USEC|auto", "bulk_poll", 0 },
	{ "kernel-relay-sndbuf", "BYTES", "kernel_relay_sndbuf", 0 },
	{ "lowat", "BYTES", "notsent_lowat", 0 },
	{}
};

static const struct nkctl_kw policy_set_kw[] = {
	{ "drop-all", "on|off", "drop_all", KW_REQ },
	{}
};

static const struct nkctl_kw vm_set_kw[] = {
	{ "nsm", "NSM", "nsm", KW_REQ },
	{}
};

static const struct nkctl_kw stats_show_kw[] = {
	{ "vm", "NAME", "vm", 0, 1 },
	{ "nsm", "NAME", "nsm", 0, 1 },
	{}
};

static const struct nkctl_kw conn_list_kw[] = {
	{ "vm", "NAME", "vm", 0 },
	{}
};

static const struct nkctl_kw vm_add_kw[] = {
	{ "nsm", "NSM", "nsm", KW_REQ },
	{ "addr", "ADDR/PREFIX[,ADDR/PREFIX...]", "addrs", KW_REQ | KW_CSV },
	{ "uds", "PATH", "uds", KW_REQ, 1 },
	{ "cid", "N", "cid", KW_REQ | KW_NUM, 1 },
	{ "gw", "ADDR", "gw", KW_REPEAT },
	{}
};

static const struct nkctl_cmd cmds[] = {
	{ "nsm", "add", "NAME", nsm_add_kw, OUT_NONE,
	  "start a Network Stack Module in NETNS; VM addresses go on IFNAME" },
	{ "nsm", "del", "NAME", NULL, OUT_NONE, "stop an NSM that no VM uses" },
	{ "nsm", "list", NULL, NULL, OUT_LIST, "list NSMs" },
	{ "nsm", "show", "NAME", NULL, OUT_OBJECT, "show one NSM" },
	{ "vm", "add", "NAME", vm_add_kw, OUT_NONE,
	  "serve a VM through NSM with these addresses" },
	{ "vm", "del", "NAME", NULL, OUT_NONE, "remove a VM and its listener" },
	{ "vm", "list", NULL, NULL, OUT_LIST, "list VMs" },
	{ "vm", "show", "NAME", NULL, OUT_OBJECT, "show one VM and its guest transport" },
	{ "vm", "set", "NAME", vm_set_kw, OUT_NONE,
	  "move a VM to another NSM (between steered NSMs its connections finish on the old one)" },
	{ "policy", "add", NULL, NULL, OUT_NONE, NULL, true },
	{ "policy", "del", NULL, NULL, OUT_NONE, NULL, true },
	{ "policy", "set", "NAME", policy_set_kw, OUT_NONE,
	  "quarantine a VM: the uplink drops every frame to or from it (on), or not (off)" },
	{ "policy", "list", NULL, NULL, OUT_LIST, "every VM's policy, and whether the uplink enforces it" },
	{ "policy", "show", "NAME", NULL, OUT_OBJECT, "one VM's policy" },
	{ "conn", "list", NULL, conn_list_kw, OUT_LIST,
	  "every guest connection and listener on the NSMs: VM, NSM, addresses, state, bytes" },
	{ "conn", "show", NULL, NULL, OUT_OBJECT, NULL, true },
	{ "conn", "del", NULL, NULL, OUT_NONE, NULL, true },
	{ "stats", "show", NULL, stats_show_kw, OUT_OBJECT,
	  "XDP steering counters: the uplink, every NSM and VM, or one" },
	{ "teardown", NULL, NULL, NULL, OUT_NONE,
	  "remove every VM and NSM, the netns, veths, XDP programs and pinned maps nkd made; nkd exits" },
};
#define NCMDS (sizeof(cmds) / sizeof(cmds[0]))

/* What each metavariable means; printed for the commands shown. */
static const struct {
	const char *var, *text;
} metavars[] = {
	{ "NAME", "1-31 characters from A-Z a-z 0-9 _ . -" },
	{ "TYPE", "kernel" },
	{ "NETNS", "a network namespace in /run/netns ('ip netns add'); when omitted,\n"
		   "               nkd (--uplink) creates netns nk-NAME, veth nkh-NAME <-> eth0" },
	{ "IFNAME", "the interface in NETNS that carries the VM addresses" },
	{ "NSM", "the name of an NSM ('nkctl nsm list')" },
	{ "ADDR/PREFIX", "up to 8, comma-separated: 10.0.0.2/24,fd00::2/64" },
	{ "PATH", "absolute; the guest connects to PATH_7531 (hybrid vsock)" },
	{ "N", "the guest's vsock CID, 3..4294967294" },
	{ "ADDR", "on-link default gateway, at most one IPv4 and one IPv6" },
};

/* ---- usage, generated from cmds[] ---- */

static void kw_usage(const struct nkctl_kw *kw, char *buf, size_t len)
{
	const struct nkctl_kw *k, *g;
	size_t n = 0;

	buf[0] = '\0';
	for (k = kw; k && k->name; k++) {
		if (k->group) {
			/* Print a group once, at its first member. */
			for (g = kw; g < k && g->group != k->group; g++)
				;
			if (g < k)
				continue;
			n += snprintf(buf + n, len - n, " %s", k->flags & KW_REQ ? "(" : "[");
			for (g = k; g->name; g++)
				if (g->group == k->group)
					n += snprintf(buf + n, len - n, "%s%s %s",
						      g == k ? "" : " | ", g->name, g->arg);
			n += snprintf(buf + n, len - n, "%s", k->flags & KW_REQ ? ")" : "]");
		} else if (k->flags & KW_JOIN) {
			continue;	/* printed with the keyword it goes with */
		} else if (k->flags & KW_REQ) {
			n += snprintf(buf + n, len - n, " %s %s", k->name, k->arg);
		} else {
			n += snprintf(buf + n, len - n, " [%s %s", k->name, k->arg);
			for (g = k + 1; g->name && (g->flags & KW_JOIN); g++)
				n += snprintf(buf + n, len - n, " %s %s", g->name, g->arg);
			n += snprintf(buf + n, len - n, "]%s", k->flags & KW_REPEAT ? "..." : "");
		}
		if (n >= len)
			return;
	}
}

static void cmd_usage(FILE *f, const struct nkctl_cmd *c, const char *lead)
{
	char kw[512];

	kw_usage(c->kw, kw, sizeof(kw));
	if (!c->verb)
		fprintf(f, "%snkctl %s\n", lead, c->object);
	else if (c->todo)
		fprintf(f, "%snkctl %s %s ...   (not implemented yet)\n", lead, c->object, c->verb);
	else
		fprintf(f, "%snkctl %s %s%s%s%s\n", lead, c->object, c->verb,
			c->name ? " " : "", c->name ? c->name : "", kw);
}

static bool var_used(const char *var, const char *object)
{
	const struct nkctl_kw *k;
	size_t i;

	for (i = 0; i < NCMDS; i++) {
		if (object && strcmp(cmds[i].object, object))
			continue;
		if (cmds[i].name && !strcmp(cmds[i].name, var))
			return true;
		for (k = cmds[i].kw; k && k->name; k++)
			if (!strncmp(k->arg, var, strlen(var)) &&
			    (!k->arg[strlen(var)] || k->arg[strlen(var)] == '['))
				return true;
	}
	return false;
}

/* The commands of one object (all with NULL); reserved ones on one line. */
static void object_usage(FILE *f, const char *object, const char *lead)
{
	size_t i, j;

	for (i = 0; i < NCMDS; i++)
		if ((!object || !strcmp(cmds[i].object, object)) && !cmds[i].todo)
			cmd_usage(f, &cmds[i], lead);
	for (i = 0; i < NCMDS; i++) {
		/* one line per run of reserved verbs of an object, which may
		 * follow implemented ones (conn list, then conn show | del) */
		if ((object && strcmp(cmds[i].object, object)) || !cmds[i].todo ||
		    (i && cmds[i - 1].todo && !strcmp(cmds[i - 1].object, cmds[i].object)))
			continue;
		fprintf(f, "%snkctl %s { %s", lead, cmds[i].object, cmds[i].verb);
		for (j = i + 1; j < NCMDS && cmds[j].todo && !strcmp(cmds[j].object, cmds[i].object);
		     j++)
			fprintf(f, " | %s", cmds[j].verb);
		fprintf(f, " } ...   (not implemented yet)\n");
	}
}

static void usage(FILE *f, const char *object)
{
	size_t i, j;

	fprintf(f, "Usage: nkctl [-j] [-p] [-c CONTROL] OBJECT VERB [ARGS]\n"
		   "       nkctl help | nkctl OBJECT help\n\n");
	object_usage(f, object, "  ");
	for (i = 0, j = 0; i < sizeof(metavars) / sizeof(metavars[0]); i++)
		if (var_used(metavars[i].var, object))
			fprintf(f, "%s  %-12s %s\n", j++ ? "" : "\nwhere\n",
				metavars[i].var, metavars[i].text);
	fprintf(f, "\n  -j, --json          JSON output (-p, --pretty: indented)\n"
		   "  -c, --control PATH  nkd's socket (default %s)\n"
		   "Objects, verbs and keywords may be abbreviated to a unique prefix;\n"
		   "keywords may come in any order.  Exit status: 0 ok, 1 error, 2 usage.\n",
		NKD_DEFAULT_CONTROL);
}

static int usage_error(const struct nkctl_cmd *c, const char *object, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int usage_error(const struct nkctl_cmd *c, const char *object, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "nkctl: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	if (c)
		cmd_usage(stderr, c, "Usage: ");
	else if (object)
		object_usage(stderr, object, "Usage: ");
	else

		fprintf(stderr, "Try 'nkctl help'.\n");
	return EXIT_USAGE;
}

/* ---- prefix matching ---- */

/* Index of the word in names[] that word abbreviates; -1 none, -2 ambiguous. */
static int match(const char *word, const char *const *names, int n)
{
	size_t len = strlen(word);
	int i, found = -1;

	if (!len)
		return -1;
	for (i = 0; i < n; i++)
		if (!strcmp(word, names[i]))
			return i;
	for (i = 0; i < n; i++) {
		if (strncmp(word, names[i], len))
			continue;
		if (found >= 0)
			return -2;
		found = i;
	}
	return found;
}

static void join_names(const char *word, const char *const *names, int n, char *buf, size_t len)
{
	size_t o = 0;
	int i;

	buf[0] = '\0';
	for (i = 0; i < n && o < len; i++)
		if (!strncmp(word, names[i], strlen(word)))
			o += snprintf(buf + o, len - o, "%s%s", o ? ", " : "", names[i]);
}

/* ---- parsing ---- */

/* jansson carries only UTF-8 text: a value it refuses is a usage error. */
static int add_string(const struct nkctl_cmd *c, const char *what, const char *val, json_t **out)
{
	*out = json_string(val);
	if (!*out)
		return usage_error(c, NULL, "%s: the value is not UTF-8 text", what);
	return 0;
}

static int add_value(const struct nkctl_cmd *c, const struct nkctl_kw *k, const char *val,
		     json_t *args)
{
	json_t *arr, *str;
	char *dup, *tok, *save;
	unsigned long long num;
	char *end;
	int ret = 0;

	if (k->flags & KW_NUM) {
		errno = 0;
		num = strtoull(val, &end, 10);
		/* digits only: strtoull() would also take " 7", "+7", "-1" */
		if (*val < '0' || *val > '9' || *end)
			return usage_error(c, NULL, "%s wants a number, not '%s'", k->name, val);
		if (errno || num > LLONG_MAX)	/* json_int_t is long long */
			return usage_error(c, NULL, "%s: %s is too large", k->name, val);
		json_object_set_new(args, k->key, json_integer((json_int_t)num));
		return 0;
	}
	if (k->flags & KW_CSV) {
		if (!*val || val[0] == ',' || val[strlen(val) - 1] == ',' || strstr(val, ",,"))
			return usage_error(c, NULL, "%s: empty element in '%s'", k->name, val);
		arr = json_array();
		dup = strdup(val);
		if (!arr || !dup) {
			json_decref(arr);
			free(dup);
			return EXIT_ERR;
		}
		for (tok = strtok_r(dup, ",", &save); tok && !ret; tok = strtok_r(NULL, ",", &save)) {
			ret = add_string(c, k->name, tok, &str);
			if (!ret)
				json_array_append_new(arr, str);
		}
		free(dup);
		if (ret) {
			json_decref(arr);
			return ret;
		}
		json_object_set_new(args, k->key, arr);
		return 0;
	}
	ret = add_string(c, k->name, val, &str);
	if (ret)
		return ret;
	if (k->flags & KW_REPEAT) {
		arr = json_object_get(args, k->key);
		if (!arr) {
			arr = json_array();
			json_object_set_new(args, k->key, arr);
		}
		json_array_append_new(arr, str);
		return 0;
	}
	json_object_set_new(args, k->key, str);
	return 0;
}

static int parse_kw(const struct nkctl_cmd *c, int argc, char **argv, json_t *args)
{
	const char *names[16];
	const struct nkctl_kw *k;
	bool seen[16] = { false };
	char list[128];
	int n = 0, i, j, ret;

	for (k = c->kw; k && k->name && n < 16; k++)
		names[n++] = k->name;
	for (i = 0; i < argc; i += 2) {
		j = match(argv[i], names, n);
		if (j == -2) {
			join_names(argv[i], names, n, list, sizeof(list));
			return usage_error(c, NULL, "ambiguous keyword '%s' (%s)", argv[i], list);
		}
		if (j < 0)
			return usage_error(c, NULL, "unknown keyword '%s' for '%s %s'", argv[i],
					   c->object, c->verb);
		k = &c->kw[j];
		if (seen[j] && !(k->flags & KW_REPEAT))
			return usage_error(c, NULL, "keyword '%s' given twice", k->name);
		seen[j] = true;
		if (i + 1 >= argc)
			return usage_error(c, NULL, "keyword '%s' needs a value (%s)", k->name, k->arg);
		ret = add_value(c, k, argv[i + 1], args);
		if (ret)
			return ret;
	}
	/* Required keywords, and groups of alternatives. */
	for (j = 0; j < n; j++) {
		const struct nkctl_kw *g;
		int given = 0, first = -1;

		k = &c->kw[j];
		if (!k->group) {
			if ((k->flags & KW_REQ) && !seen[j])
				return usage_error(c, NULL, "missing '%s %s'", k->name, k->arg);
			continue;
		}
		for (g = c->kw; g->name; g++) {
			if (g->group != k->group)
				continue;
			if (first < 0)
				first = g - c->kw;
			given += seen[g - c->kw];
		}
		if (first != j)
			continue;
		list[0] = '\0';
		for (g = c->kw; g->name; g++)
			if (g->group == k->group)
				snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s'%s %s'",
					 list[0] ? " or " : "", g->name, g->arg);
		if (given > 1)
			return usage_error(c, NULL, "give only one of %s", list);
		if (!given && (k->flags & KW_REQ))
			return usage_error(c, NULL, "missing one of %s", list);
	}
	/* Keywords that go together: "[netns NETNS dev IFNAME]". */
	for (j = 0; j < n; j++) {
		int lead = j;

		if (!(c->kw[j].flags & KW_JOIN))
			continue;
		while (lead > 0 && (c->kw[lead].flags & KW_JOIN))
			lead--;
		if (seen[j] != seen[lead])
			return usage_error(c, NULL, "'%s %s' and '%s %s' go together", c->kw[lead].name,
					   c->kw[lead].arg, c->kw[j].name, c->kw[j].arg);
	}
	return 0;
}

/*
 * argv (with argv[0]) into req.  Returns 0 with req->cmd set and req->args
 * the request's args (the caller's to free), 0 with req->cmd NULL when help
 * was asked for and printed, or an exit status after saying why on stderr.
 */
int nkctl_args_parse(int argc, char **argv, struct nkctl_req *req)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "pretty", no_argument, NULL, 'p' },
		{ "control", required_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	const char *objects[NCMDS + 1], *verbs[NCMDS + 1];
	const struct nkctl_cmd *c = NULL;
	int nobj = 0, nverb = 0, i, j, opt, ret;
	const char *object;
	char list[128];
	json_t *args, *name;
	size_t k;

	*req = (struct nkctl_req){ .control = NKD_DEFAULT_CONTROL };
	optind = 0;	/* getopt from the start (glibc), on every call */
	while ((opt = getopt_long(argc, argv, "+jpc:h", opts, NULL)) != -1) {
		switch (opt) {
		case 'j':
			req->json_out = true;
			break;
		case 'p':
			req->json_out = req->pretty = true;
			break;
		case 'c':
			req->control = optarg;
			break;
		case 'h':
			usage(stdout, NULL);
			return 0;
		default:	/* getopt said which */
			return usage_error(NULL, NULL, "unknown option");
		}
	}
	argc -= optind;
	argv += optind;
	if (argc < 1) {
		usage(stderr, NULL);
		return EXIT_USAGE;
	}

	for (k = 0; k < NCMDS; k++) {
		for (j = 0; j < nobj && strcmp(objects[j], cmds[k].object); j++)
			;
		if (j == nobj)
			objects[nobj++] = cmds[k].object;
	}
	objects[nobj] = "help";
	i = match(argv[0], objects, nobj + 1);
	if (i == -2) {
		join_names(argv[0], objects, nobj + 1, list, sizeof(list));
		return usage_error(NULL, NULL, "ambiguous object '%s' (%s)", argv[0], list);
	}
	if (i < 0)
		return usage_error(NULL, NULL, "unknown object '%s'", argv[0]);
	if (i == nobj) {
		usage(stdout, NULL);
		return 0;
	}
	object = objects[i];

	for (k = 0; k < NCMDS; k++) {
		if (strcmp(cmds[k].object, object))
			continue;
		if (!cmds[k].verb) {
			/* the object is the whole command: never abbreviated */
			c = &cmds[k];
			if (strcmp(argv[0], object))
				return usage_error(c, NULL, "say '%s' in full", object);
			if (argc > 1 && !strcmp(argv[1], "help")) {
				usage(stdout, object);
				return 0;
			}
			if (argc > 1)
				return usage_error(c, NULL, "unexpected argument '%s'", argv[1]);
			req->args = json_object();
			if (!req->args)
				return EXIT_ERR;
			req->cmd = c;
			return 0;
		}
		verbs[nverb++] = cmds[k].verb;
	}
	verbs[nverb] = "help";
	if (argc < 2) {
		/* "nkctl vm" lists, as "ip link" shows; "nkctl stats" shows. */
		i = match("list", verbs, nverb);
		if (i < 0)
			i = match("show", verbs, nverb);
		if (i < 0)
			return usage_error(NULL, object, "missing VERB for '%s'", object);
	} else {
		i = match(argv[1], verbs, nverb + 1);
		if (i == -2) {
			join_names(argv[1], verbs, nverb + 1, list, sizeof(list));
			return usage_error(NULL, object, "ambiguous verb '%s' (%s)", argv[1], list);
		}
		if (i < 0)
			return usage_error(NULL, object, "unknown verb '%s' for '%s'", argv[1], object);
		if (i == nverb) {
			usage(stdout, object);
			return 0;
		}
	}
	for (k = 0; k < NCMDS; k++)
		if (!strcmp(cmds[k].object, object) && cmds[k].verb && !strcmp(cmds[k].verb, verbs[i]))
			c = &cmds[k];
	if (c->todo) {
		fprintf(stderr, "nkctl: '%s %s' is not implemented yet\n", c->object, c->verb);
		return EXIT_ERR;
	}
	if (argc < 2) {
		argc = 0;
	} else {
		argc -= 2;
		argv += 2;
	}

	args = json_object();
	if (!args)
		return EXIT_ERR;
	if (c->name) {
		if (argc < 1) {
			json_decref(args);
			return usage_error(c, NULL, "missing %s", c->name);
		}
		ret = add_string(c, c->name, argv[0], &name);
		if (ret) {
			json_decref(args);
			return ret;
		}
		json_object_set_new(args, "name", name);
		argc--;
		argv++;
	}
	if (!c->kw && argc > 0) {
		json_decref(args);
		return usage_error(c, NULL, "unexpected argument '%s'", argv[0]);
	}
	ret = parse_kw(c, argc, argv, args);
	if (ret) {
		json_decref(args);
		return ret;
	}
	req->cmd = c;
	req->args = args;
	return 0;
}
