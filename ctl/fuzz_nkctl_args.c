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
 * - an accepted one is the request the words give, worked out here
 *   without the parser (check_request(): the options by getopt_long(),
 *   then OBJECT, VERB, NAME and each KEYWORD VALUE pair): the same command,
 *   options and args, every value under its keyword's key as typed (a
 *   number for a digits-only cid, one string per element of a list, one
 *   per repeated gw); and nothing the parser should refuse was accepted
 *   (a bad option, an unknown, ambiguous or repeated keyword, a missing
 *   value or required keyword, two of a group, one of netns/dev, text
 *   that is not UTF-8, a number too large);
 * - the same argv parses to the same request twice (getopt restarts).
 * NK_FUZZ_VERBOSE=1 prints each command line's outcome.  Built by `make`
 * (clang, ASan + UBSan); run by selftests/test_fuzz.sh.
 */
#include <getopt.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nkctl.h"
#include "nkd.h"

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

static void fail(const char *what, const char *detail) __attribute__((noreturn));

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

/* The keyword of c that word names in full or abbreviates uniquely. */
static const struct nkctl_kw *keyword(const struct nkctl_cmd *c, const char *word)
{
	const struct nkctl_kw *k, *found = NULL;
	size_t len = strlen(word);

	for (k = c->kw; k && k->name; k++)
		if (!strcmp(k->name, word))
			return k;
	for (k = c->kw; len && k && k->name; k++) {
		if (strncmp(k->name, word, len))
			continue;
		if (found)
			return NULL;
		found = k;
	}
	return found;
}

static bool abbreviates(const char *word, const char *name)
{
	return *word && !strncmp(name, word, strlen(word));
}

/*
 * The request argv should give, worked out here without the parser: the
 * options by getopt_long() over nkctl's table, then OBJECT, VERB (or the
 * default list/show), NAME and KEYWORD VALUE pairs, each keyword the one
 * of the accepted command it names.  Anything the parser should have
 * refused fails here.  The result must equal the parser's request.
 */
static void check_request(const struct nkctl_req *req)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "pretty", no_argument, NULL, 'p' },
		{ "control", required_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	const struct nkctl_cmd *c = req->cmd;
	const char *control = NKD_DEFAULT_CONTROL, *w;
	bool json_out = false, pretty = false, seen[16] = { false };
	const struct nkctl_kw *k, *g;
	json_t *want, *v, *arr;
	char *dump, *dup, *tok, *save;
	int opt, pos, given;

	if (!json_is_object(req->args))
		fail("accepted without an args object", NULL);
	dump = json_dumps(req->args, JSON_COMPACT);
	if (!dump)
		fail("accepted args that JSON cannot encode", NULL);
	free(dump);

	optind = 0;
	opterr = 0;
	while ((opt = getopt_long(nwords, words, "+jpc:h", opts, NULL)) != -1) {
		if (opt == 'j' || opt == 'p')
			json_out = true;
		if (opt == 'p')
			pretty = true;
		if (opt == 'c')
			control = optarg;
		if (opt == 'h' || opt == '?' || opt == ':')
			fail("accepted a bad option, or help", NULL);
	}
	opterr = 1;
	pos = optind;
	if (req->json_out != json_out || req->pretty != pretty || strcmp(req->control, control))
		fail("options other than given", NULL);

	if (pos >= nwords || !abbreviates(words[pos], c->object))
		fail("accepted another command than the words name", c->object);
	if (!c->verb) {
		if (strcmp(words[pos], c->object) || pos + 1 != nwords)
			fail("accepted an abbreviated or extended command", c->object);
		if (json_object_size(req->args))
			fail("args for a command that takes none", c->object);
		return;
	}
	if (++pos < nwords) {
		if (!abbreviates(words[pos++], c->verb))
			fail("accepted another verb than the words name", c->verb);
	} else if (strcmp(c->verb, "list") && strcmp(c->verb, "show")) {
		fail("a default verb other than list or show", c->verb);
	}

	want = json_object();
	if (!want)
		abort();
	if (c->name) {
		if (pos >= nwords)
			fail("accepted without its NAME", c->name);
		v = json_string(words[pos++]);
		if (!v)
			fail("accepted a NAME that is not UTF-8", NULL);
		json_object_set_new(want, "name", v);
	}
	for (; pos < nwords; pos += 2) {
		k = keyword(c, words[pos]);
		if (!k || k - c->kw >= 16)
			fail("accepted an unknown or ambiguous keyword", words[pos]);
		if (seen[k - c->kw] && !(k->flags & KW_REPEAT))
			fail("accepted a keyword twice", k->name);
		seen[k - c->kw] = true;
		if (pos + 1 >= nwords)
			fail("accepted a keyword without its value", k->name);
		w = words[pos + 1];
		if (k->flags & KW_NUM) {
			if (!all_digits(w) || strtoull(w, NULL, 10) > LLONG_MAX)
				fail("accepted a number that is not one", w);
			v = json_integer((json_int_t)strtoull(w, NULL, 10));
		} else if (k->flags & KW_CSV) {
			if (!*w || *w == ',' || w[strlen(w) - 1] == ',' || strstr(w, ",,"))
				fail("accepted an empty list element", w);
			v = json_array();
			dup = strdup(w);
			if (!v || !dup)
				abort();
			for (tok = strtok_r(dup, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
				if (json_array_append_new(v, json_string(tok)))
					fail("accepted a list element that is not UTF-8", NULL);
			free(dup);
		} else {
			v = json_string(w);
		}
		if (!v)
			fail("accepted a value that is not UTF-8", k->name);
		if (k->flags & KW_REPEAT) {
			arr = json_object_get(want, k->key);
			if (!arr) {
				arr = json_array();
				json_object_set_new(want, k->key, arr);
			}
			json_array_append_new(arr, v);
		} else {
			json_object_set_new(want, k->key, v);
		}
	}
	for (k = c->kw; k && k->name; k++) {
		for (g = c->kw, given = 0; g->name; g++)
			if (g == k || (k->group && g->group == k->group))
				given += seen[g - c->kw];
		if (given > 1 && k->group)
			fail("accepted two of a group", k->name);
		if ((k->flags & KW_REQ) && !given)
			fail("accepted without a required keyword", k->name);
		for (g = k; g > c->kw && (g->flags & KW_JOIN); g--)
			;
		if ((k->flags & KW_JOIN) && seen[k - c->kw] != seen[g - c->kw])
			fail("accepted one of two keywords that go together", k->name);
	}
	if (!json_equal(want, req->args)) {
		dump = json_dumps(want, JSON_COMPACT | JSON_SORT_KEYS);
		fail("a request other than the words give; they give", dump);
	}
	json_decref(want);
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
	char *out, *err, *out2, *err2, *s;
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
	if (req.args && !json_equal(req.args, again.args))
		fail("the same argv gave two requests", NULL);
	if (verbose && req.cmd) {
		s = json_dumps(req.args, JSON_COMPACT | JSON_SORT_KEYS);
		fprintf(stderr, "request: %s %s %s\n", req.cmd->object,
			req.cmd->verb ? req.cmd->verb : "", s ? s : "?");
		free(s);
	}
	json_decref(req.args);
	json_decref(again.args);
	free(out);
	free(err);
	free(out2);
	free(err2);
	free(buf);
	return 0;
}
