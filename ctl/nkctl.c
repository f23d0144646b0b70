// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * nkctl: the command-line interface of nkd.
 *
 *   nkctl [-j] [-p] [-c CONTROL] OBJECT VERB [NAME] [KEYWORD VALUE]...
 *   nkctl [-j] [-p] [-c CONTROL] teardown
 *
 * iproute2/bpftool style: one table drives both parsing and the usage text
 * (nkctl_args.c); objects, verbs and keywords may be abbreviated to any
 * unique prefix; keywords come in any order.  nkctl checks the grammar
 * (exit 2 on a usage error), sends one JSON request to nkd over its
 * SOCK_SEQPACKET control socket, and prints the reply: a table, "key value"
 * lines, or JSON with -j.  nkd does all semantic validation (exit 1).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "nkctl.h"
#include "nkd.h"

static bool json_out, pretty;
static const char *control = NKD_DEFAULT_CONTROL;

/* ---- talking to nkd ---- */

static json_t *nkd_call(json_t *req)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = 60 };
	json_t *reply = NULL;
	json_error_t jerr;
	char *s, *buf = NULL;
	ssize_t n;
	int fd;

	if (strlen(control) >= sizeof(sun.sun_path)) {
		fprintf(stderr, "nkctl: control socket path %s is too long\n", control);
		return NULL;
	}
	strcpy(sun.sun_path, control);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		fprintf(stderr, "nkctl: socket: %s\n", strerror(errno));
		return NULL;
	}
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		int e = errno;

		fprintf(stderr, "nkctl: cannot connect to nkd at %s: %s; %s\n", control, strerror(e),
			e == EACCES ? "nkctl must run as root" :
			"is nkd running? (start it, or point -c at its --control socket)");
		goto out;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	s = json_dumps(req, JSON_COMPACT);
	if (!s || send(fd, s, strlen(s), MSG_NOSIGNAL) < 0) {
		fprintf(stderr, "nkctl: cannot send the request to nkd: %s\n", strerror(errno));
		free(s);
		goto out;
	}
	free(s);
	buf = malloc(NKD_CTL_MSG_MAX + 1);
	if (!buf) {
		fprintf(stderr, "nkctl: out of memory\n");
		goto out;
	}
	n = recv(fd, buf, NKD_CTL_MSG_MAX + 1, MSG_TRUNC);
	if (n <= 0) {
		fprintf(stderr, "nkctl: %s\n", n == 0 ? "nkd closed the connection without a reply" :
			errno == EAGAIN ? "nkd did not answer within 60 s" : strerror(errno));
		goto out;
	}
	if (n > NKD_CTL_MSG_MAX) {
		fprintf(stderr, "nkctl: the reply from nkd is too large\n");
		goto out;
	}
	reply = json_loadb(buf, n, 0, &jerr);
	if (!reply || !json_is_object(reply)) {
		fprintf(stderr, "nkctl: malformed reply from nkd: %s\n", reply ? "not an object" : jerr.text);
		json_decref(reply);
		reply = NULL;
	}
out:
	free(buf);
	close(fd);
	return reply;
}

static int run(const struct nkctl_cmd *c, json_t *args)
{
	json_t *req, *reply, *w, *result;
	const char *msg;
	size_t i;
	int ret = NKCTL_EXIT_ERR;

	req = json_pack("{s:s, s:s, s:O}", "object", c->object, "verb", c->verb ? c->verb : "",
			"args", args);
	reply = nkd_call(req);
	json_decref(req);
	if (!reply)
		return NKCTL_EXIT_ERR;
	json_array_foreach(json_object_get(reply, "warnings"), i, w) {
		fprintf(stderr, "nkctl: warning: %s\n", json_string_value(w));
	}
	if (!json_is_true(json_object_get(reply, "ok"))) {
		msg = json_string_value(json_object_get(reply, "error"));
		fprintf(stderr, "nkctl: %s\n", msg ? msg : "nkd refused the request");
		goto out;
	}
	result = json_object_get(reply, "result");
	if (json_out) {
		char *s = json_dumps(result, JSON_ENCODE_ANY | (pretty ? JSON_INDENT(2) : JSON_COMPACT));

		if (s)
			printf("%s\n", s);
		free(s);
	} else {
		nkctl_print(c, result);
	}
	ret = 0;
out:
	json_decref(reply);
	return ret;
}

int main(int argc, char **argv)
{
	struct nkctl_req req;
	int ret;

	ret = nkctl_args_parse(argc, argv, &req);
	if (ret || !req.cmd)
		return ret;
	json_out = req.json_out;
	pretty = req.pretty;
	control = req.control;
	ret = run(req.cmd, req.args);
	json_decref(req.args);
	return ret;
}
