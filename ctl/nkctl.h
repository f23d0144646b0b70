/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * nkctl: the command table shared by parsing, usage text and output.
 * One row per OBJECT VERB; each row lists its keyword options.  Usage and
 * help are generated from these rows, so they cannot drift from the parser.
 */
#ifndef NKCTL_H
#define NKCTL_H

#include <stdbool.h>
#include <jansson.h>

enum {
	KW_REQ = 1 << 0,	/* required (for a group: one of it is) */
	KW_REPEAT = 1 << 1,	/* may be given more than once: a list */
	KW_CSV = 1 << 2,	/* value is a comma-separated list */
	KW_NUM = 1 << 3,	/* value is an unsigned number */
	KW_JOIN = 1 << 4,	/* goes with the optional keyword before it: "[a X b Y]" */
};

struct nkctl_kw {
	const char *name;	/* the keyword the user types */
	const char *arg;	/* its metavariable in the usage */
	const char *key;	/* JSON key in the request's args */
	unsigned int flags;
	int group;		/* > 0: alternatives "(a X | b Y)" */
};

enum nkctl_out {
	OUT_NONE,		/* add, del: JSON with -j, silent otherwise */
	OUT_OBJECT,		/* show: "key value" lines */
	OUT_LIST,		/* list: an aligned table */
};

struct nkctl_cmd {
	const char *object;
	const char *verb;	/* NULL: the object is the command ("nkctl teardown") */
	const char *name;	/* positional metavariable, or NULL */
	const struct nkctl_kw *kw;	/* terminated by a NULL name */
	enum nkctl_out out;
	const char *help;
	bool todo;		/* reserved: answers "not implemented yet" */
};

/* Exit statuses: 0 ok, 1 error (nkd refused, or no reply), 2 usage. */
#define NKCTL_EXIT_ERR		1
#define NKCTL_EXIT_USAGE	2

/* One command line, parsed: what to send and how to show the reply. */
struct nkctl_req {
	const struct nkctl_cmd *cmd;	/* NULL: help was printed, nothing to send */
	json_t *args;			/* the request's "args"; the caller frees it */
	bool json_out, pretty;		/* -j, -p */
	const char *control;		/* -c, or NKD_DEFAULT_CONTROL */
};

/* nkctl_args.c: argv (with argv[0]) into req.  0, or an exit status after
 * saying why on stderr; see there. */
int nkctl_args_parse(int argc, char **argv, struct nkctl_req *req);

/* nkctl_out.c */
void nkctl_print(const struct nkctl_cmd *cmd, json_t *result);

#endif /* NKCTL_H */
