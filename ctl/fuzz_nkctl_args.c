// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * libFuzzer harness: nkctl's command line (nkctl_args_parse() in
 * ctl/nkctl_args.c).  The input is argv after argv[0], one word per
 * NUL-terminated run of bytes (at most 64 words; any bytes, as a shell
 * passes them).  Nothing is sent: the parser only builds the request.
 *
 * What must hold, checked here for every input:
 * - a refused command line exits 1 or 2 and says why on stderr; help exits
 *   0 and prints; nothing else returns without a request;
 * - an accepted one has args that JSON can encode, every required keyword
 *   (or one of a required group), only the command's keys and "name";
 * - no word is lost: every word of argv is an option or follows one (-c
 *   PATH), is a prefix of the grammar's names, or reaches args (as a
 *   string, a number for a digits-only word, or every element of a
 *   comma-separated list);
 * - nothing is invented: every string in args is a word of argv or an
 *   element of one, every number a digits-only word's value;
 * - the same argv parses to the same request twice (getopt restarts).
 * NK_FUZZ_VERBOSE=1 prints each command line's outcome.  Built by `make`
 * (clang, ASan + UBSan); run by selftests/test_fuzz.sh.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nkctl.h"

#define WORDS_MAX	64

static bool verbose;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *v = getenv("NK_FUZZ_VERBOSE");

	(void)argc;
	(void)argv;
	verbose = v && !strcmp(v, "1");
	return 0;
}

static int nwords;
static char *words[WORDS_MAX + 2];	/* argv: "nkctl", the words, NULL */
static FILE *real_out, *real_err;

static void fail(const char *what, const char *detail)
{
	int i;

	stdout = real_out;
	stderr = real_err;
	fprintf(stderr, "fuzz_nkctl_args: %s%s%s\n  argv:", what, detail ? ": " : "",
		detail ? detail : "");
	for (i = 1; i < nwords; i++)
		fprintf(stderr, " '%s'", words[i]);
	fprintf(stderr, "\n");
	abort();
}

static bool all_digits(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (*s < '0' || *s > '9')
			return false;
	return true;
}

/* A word that names a piece of the grammar: it need not reach args. */
static bool grammar_word(const struct nkctl_cmd *c, const char *w)
{
	static const char *const fixed[] = { "nsm", "vm", "conn", "stats", "teardown", "help",
					     "add", "del", "list", "show", "set", NULL };
	size_t len = strlen(w);
	const struct nkctl_kw *k;
	int i;

	if (w[0] == '-')
		return true;	/* an option (a value that starts so is not checked) */
	if (!len)
		return false;
	for (i = 0; fixed[i]; i++)
		if (!strncmp(w, fixed[i], len))
			return true;
	for (k = c->kw; k && k->name; k++)
		if (!strncmp(w, k->name, len))
			return true;
	return false;
}

static bool has_string(json_t *args, const char *s)
{
	const char *key;
	json_t *v, *e;
	size_t i;

	json_object_foreach(args, key, v) {
		if (json_is_string(v) && !strcmp(json_string_value(v), s))
			return true;
		json_array_foreach(v, i, e)
			if (json_is_string(e) && !strcmp(json_string_value(e), s))
				return true;
	}
	return false;
}

static bool has_number(json_t *args, const char *w)
{
	unsigned long long n = strtoull(w, NULL, 10);
	const char *key;
	json_t *v;

	json_object_foreach(args, key, v)
		if (json_is_integer(v) && (unsigned long long)json_integer_value(v) == n)
			return true;
	return false;
}

/* Every element of a comma-separated word is a string of args. */
static bool has_elements(json_t *args, const char *w)
{
	char *dup, *tok, *save;
	bool all = true;

	if (!strchr(w, ',') || !(dup = strdup(w)))
		return false;
	for (tok = strtok_r(dup, ",", &save); tok && all; tok = strtok_r(NULL, ",", &save))
		all = has_string(args, tok);
	free(dup);
	return all;
}

/* A string of args is a word, or an element of a comma-separated one. */
static bool from_argv(const char *s)
{
	size_t len = strlen(s);
	const char *p;
	int i;

	for (i = 1; i < nwords; i++) {
		if (!strcmp(words[i], s))
			return true;
		if (!len)
			continue;	/* a list has no empty element */
		for (p = strstr(words[i], s); p; p = strstr(p + 1, s))
			if ((p == words[i] || p[-1] == ',') && (p[len] == ',' || !p[len]))
				return true;
	}
	return false;
}

static bool number_from_argv(json_int_t n)
{
	int i;

	for (i = 1; i < nwords; i++)
		if (all_digits(words[i]) && strtoull(words[i], NULL, 10) == (unsigned long long)n)
			return true;
	return false;
}

static void check_request(const struct nkctl_req *req)
{
	const struct nkctl_cmd *c = req->cmd;
	const struct nkctl_kw *k, *g;
	const char *key;
	char *dump;
	json_t *v, *e;
	size_t i;
	int w, given;

	if (!json_is_object(req->args))
		fail("accepted without an args object", NULL);
	dump = json_dumps(req->args, JSON_COMPACT);
	if (!dump)
		fail("accepted args that JSON cannot encode", NULL);
	free(dump);
	if (c->name && !json_is_string(json_object_get(req->args, "name")))
		fail("accepted without its NAME", c->name);
	for (k = c->kw; k && k->name; k++) {
		if (!(k->flags & KW_REQ))
			continue;
		for (g = c->kw, given = 0; g->name; g++)
			if (g == k || (k->group && g->group == k->group))
				given += json_object_get(req->args, g->key) != NULL;
		if (given != 1)
			fail("a required keyword missing, or two of a group", k->name);
	}
	json_object_foreach(req->args, key, v) {
		for (k = c->kw; k && k->name && strcmp(k->key, key); k++)
			;
		if (strcmp(key, "name") && !(k && k->name))
			fail("a key the command does not have", key);
		if (json_is_string(v) && !from_argv(json_string_value(v)))
			fail("a string not from argv", json_string_value(v));
		if (json_is_integer(v) && (json_integer_value(v) < 0 ||
					   !number_from_argv(json_integer_value(v))))
			fail("a number not from argv", key);
		json_array_foreach(v, i, e)
			if (!json_is_string(e) || !from_argv(json_string_value(e)))
				fail("a list element not from argv", key);
		if (!json_is_string(v) && !json_is_integer(v) && !json_is_array(v))
			fail("a value of another JSON type", key);
	}
	for (w = 1; w < nwords; w++) {
		/* -c PATH twice: the last wins, as with getopt everywhere */
		if (words[w - 1][0] == '-' || grammar_word(c, words[w]) ||
		    has_string(req->args, words[w]) ||
		    (all_digits(words[w]) && has_number(req->args, words[w])) ||
		    has_elements(req->args, words[w]))
			continue;
		fail("a word lost", words[w]);
	}
}

/* Parse argv with stdout and stderr caught; returns the exit status. */
static int parse(struct nkctl_req *req, char **out, size_t *outlen, char **err, size_t *errlen)
{
	FILE *o = open_memstream(out, outlen), *e = open_memstream(err, errlen);
	int ret;

	if (!o || !e)
		abort();
	stdout = o;
	stderr = e;
	ret = nkctl_args_parse(nwords, words, req);
	stdout = real_out;
	stderr = real_err;
	fclose(o);
	fclose(e);
	return ret;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct nkctl_req req, again;
	char *out, *err, *out2, *err2, *s1 = NULL, *s2 = NULL;
	size_t outlen, errlen, outlen2, errlen2, i, start;
	char *buf;
	int ret, ret2;

	buf = malloc(size + 1);
	if (!buf)
		return 0;
	memcpy(buf, data, size);
	buf[size] = 0;
	real_out = stdout;
	real_err = stderr;
	words[0] = "nkctl";
	nwords = 1;
	for (i = 0, start = 0; i <= size && nwords <= WORDS_MAX; i++) {
		if (buf[i])
			continue;
		if (i < size || i > start)	/* no empty word from the end */
			words[nwords++] = buf + start;
		start = i + 1;
	}
	words[nwords] = NULL;

	ret = parse(&req, &out, &outlen, &err, &errlen);
	if (verbose)
		fprintf(stderr, "exit %d%s%s", ret, errlen ? ": " : "\n", errlen ? err : "");
	if (ret) {
		if (ret != NKCTL_EXIT_ERR && ret != NKCTL_EXIT_USAGE)
			fail("an exit status other than 1 or 2", NULL);
		if (!errlen)
			fail("refused without saying why", NULL);
		if (req.cmd || req.args)
			fail("refused, with a request left", NULL);
	} else if (!req.cmd) {
		if (!outlen || req.args)
			fail("nothing to send, but no help printed", NULL);
	} else {
		check_request(&req);
	}

	ret2 = parse(&again, &out2, &outlen2, &err2, &errlen2);
	if (ret2 != ret || again.cmd != req.cmd || outlen2 != outlen || errlen2 != errlen ||
	    again.json_out != req.json_out || again.pretty != req.pretty ||
	    again.control != req.control)
		fail("the same argv parsed differently twice", NULL);
	if (req.args) {
		s1 = json_dumps(req.args, JSON_COMPACT | JSON_SORT_KEYS);
		s2 = json_dumps(again.args, JSON_COMPACT | JSON_SORT_KEYS);
		if (!s1 || !s2 || strcmp(s1, s2))
			fail("the same argv gave two requests", NULL);
		if (verbose && req.cmd)
			fprintf(stderr, "request: %s %s %s\n", req.cmd->object,
				req.cmd->verb ? req.cmd->verb : "", s1);
	}
	free(s1);
	free(s2);
	json_decref(req.args);
	json_decref(again.args);
	free(out);
	free(err);
	free(out2);
	free(err2);
	free(buf);
	return 0;
}
