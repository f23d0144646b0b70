// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * nkctl's human output: one path for every object.  A list is an aligned
 * table of the columns below; a show is "key value" lines in the order
 * below, keys being the JSON keys that -j prints.  Values are rendered the
 * same way in both: lists joined with ",", null and empty as "-", an
 * object (drop counters by reason) as its non-zero "key=value" members.
 * "stats show" without arguments is a table with one row for the uplink
 * (global), one per NSM and one per VM.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nkctl.h"

struct col {
	const char *key;
	const char *title;
};

static const struct col nsm_cols[] = {
	{ "name", "NAME" }, { "type", "TYPE" }, { "netns", "NETNS" }, { "dev", "DEV" },
	{ "relay", "RELAY" }, { "pid", "PID" }, { "state", "STATE" }, { "restarts", "RESTARTS" }, { "vms", "VMS" },
	{}
};

static const struct col vm_cols[] = {
	{ "name", "NAME" }, { "id", "ID" }, { "nsm", "NSM" }, { "addrs", "ADDRESSES" },
	{ "gw", "GW" }, { "transport", "TRANSPORT" }, { "state", "STATE" },
	{}
};

static const struct col conn_cols[] = {
	{ "vm", "VM" }, { "nsm", "NSM" }, { "proto", "PROTO" }, { "local", "LOCAL" },
	{ "remote", "REMOTE" }, { "state", "STATE" }, { "bytes_in", "BYTES_IN" },
	{ "bytes_out", "BYTES_OUT" },
	{}
};

static const char *const nsm_show[] = {
	"name", "id", "type", "netns", "dev", "relay", "busy_poll", "bulk_poll", "kernel_relay_sndbuf",
	"notsent_lowat", "managed", "hostdev", "xdp_mode", "netns_id",
	"state", "pid",
	"restarts", "vms", "adopted", "config_differs", "running", "control", "log", "reason",
	NULL
};

static const char *const vm_show[] = {
	"name", "id", "nsm", "addrs", "gw", "uds", "listen", "cid", "transport", "policy", "state",
	"error", NULL
};

static const struct col policy_cols[] = {
	{ "vm", "VM" }, { "nsm", "NSM" }, { "drop_all", "DROP_ALL" }, { "enforced", "ENFORCED" },
	{}
};

static const char *const policy_show[] = { "vm", "nsm", "drop_all", "enforced", NULL };

static const struct col stats_cols[] = {
	{ "object", "OBJECT" }, { "name", "NAME" }, { "rx_packets", "RX_PACKETS" },
	{ "rx_bytes", "RX_BYTES" }, { "tx_packets", "TX_PACKETS" }, { "tx_bytes", "TX_BYTES" },
	{ "pass_packets", "PASS_PACKETS" }, { "drops", "DROPS" },
	{}
};

static const char *const stats_show[] = {
	"object", "name", "id", "nsm", "hostdev", "xdp_mode", "ifindex", "miss", "pin_dir",
	"rx_packets", "rx_bytes", "tx_packets", "tx_bytes", "pass_packets", "pass_bytes",
	"drops", NULL
};

/* Render one JSON value as text; the caller frees the result.  An object
 * shows its members that are not zero (drop counters), or all of them
 * with ZEROS (an NSM's running settings, where 0 means something). */
static char *value_text_z(json_t *v, bool zeros)
{
	char *s = NULL;
	size_t len = 0, i;
	FILE *f;
	json_t *e;

	f = open_memstream(&s, &len);
	if (!f)
		return strdup("?");
	switch (json_typeof(v)) {
	case JSON_STRING:
		fputs(json_string_value(v), f);
		break;
	case JSON_INTEGER:
		fprintf(f, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		break;
	case JSON_REAL:
		fprintf(f, "%g", json_real_value(v));
		break;
	case JSON_TRUE:
		fputs("yes", f);
		break;
	case JSON_FALSE:
		fputs("no", f);
		break;
	case JSON_ARRAY:
		if (!json_array_size(v))
			fputs("-", f);
		json_array_foreach(v, i, e) {
			char *t = value_text_z(e, zeros);

			fprintf(f, "%s%s", i ? "," : "", t);
			free(t);
		}
		break;
	case JSON_OBJECT: {
		const char *key;
		bool any = false;

		json_object_foreach(v, key, e) {
			if (!zeros && json_is_integer(e) && !json_integer_value(e))
				continue;
			{
				char *t = value_text_z(e, zeros);

				fprintf(f, "%s%s=%s", any ? "," : "", key, t);
				free(t);
			}
			any = true;
		}
		if (!any)
			fputs("-", f);
		break;
	}
	default:
		fputs("-", f);
		break;
	}
	fclose(f);
	return s;
}

static char *value_text(json_t *v)
{
	return value_text_z(v, false);
}

static void cell(const char *s, size_t width, bool last)
{
	if (last)
		printf("%s\n", s);
	else
		printf("%-*s  ", (int)width, s);
}

static void print_table(const struct col *cols, json_t *rows)
{
	size_t ncol, r, c, w[16] = { 0 };
	json_t *row;
	char *t;

	for (ncol = 0; ncol < 16 && cols[ncol].key; ncol++)
		w[ncol] = strlen(cols[ncol].title);
	json_array_foreach(rows, r, row) {
		for (c = 0; c < ncol; c++) {
			t = value_text(json_object_get(row, cols[c].key));
			if (strlen(t) > w[c])
				w[c] = strlen(t);
			free(t);
		}
	}
	for (c = 0; c < ncol; c++)
		cell(cols[c].title, w[c], c + 1 == ncol);
	json_array_foreach(rows, r, row) {
		for (c = 0; c < ncol; c++) {
			t = value_text(json_object_get(row, cols[c].key));
			cell(t, w[c], c + 1 == ncol);
			free(t);
		}
	}
}

static void print_object(const char *const *keys, json_t *obj)
{
	size_t i, w = 0;
	json_t *v;
	char *t;

	for (i = 0; keys[i]; i++)
		if (json_object_get(obj, keys[i]) && strlen(keys[i]) > w)
			w = strlen(keys[i]);
	for (i = 0; keys[i]; i++) {
		v = json_object_get(obj, keys[i]);
		if (!v)
			continue;
		t = value_text_z(v, !strcmp(keys[i], "running"));
		printf("%-*s  %s\n", (int)w, keys[i], t);
		free(t);
	}
}

/* stats show: one table of the global, NSM and VM counters. */
static void print_stats(json_t *result)
{
	json_t *rows, *g = json_object_get(result, "global"), *o;
	size_t i;

	if (!g) {
		print_object(stats_show, result);
		return;
	}
	printf("uplink %s (ifindex %" JSON_INTEGER_FORMAT ", %s XDP), miss %s, maps in %s\n\n",
	       json_string_value(json_object_get(g, "name")),
	       json_integer_value(json_object_get(g, "ifindex")),
	       json_string_value(json_object_get(g, "xdp_mode")),
	       json_string_value(json_object_get(g, "miss")),
	       json_string_value(json_object_get(g, "pin_dir")));
	rows = json_array();
	json_array_append(rows, g);
	json_array_foreach(json_object_get(result, "nsms"), i, o) {
		json_array_append(rows, o);
	}
	json_array_foreach(json_object_get(result, "vms"), i, o) {
		json_array_append(rows, o);
	}
	print_table(stats_cols, rows);
	json_decref(rows);
}

void nkctl_print(const struct nkctl_cmd *cmd, json_t *result)
{
	bool vm = !strcmp(cmd->object, "vm");

	if (!strcmp(cmd->object, "stats")) {
		print_stats(result);
		return;
	}

	if (!strcmp(cmd->object, "conn") && cmd->out == OUT_LIST) {
		print_table(conn_cols, result);
		return;
	}
	if (!strcmp(cmd->object, "policy")) {
		if (cmd->out == OUT_LIST)
			print_table(policy_cols, result);
		else if (cmd->out == OUT_OBJECT)
			print_object(policy_show, result);
		return;
	}
	switch (cmd->out) {
	case OUT_LIST:
		print_table(vm ? vm_cols : nsm_cols, result);
		break;
	case OUT_OBJECT:
		print_object(vm ? vm_show : nsm_show, result);
		break;
	case OUT_NONE:
		break;
	}
}
