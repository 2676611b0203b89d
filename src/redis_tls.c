/*-------------------------------------------------------------------------
 *
 * redis_tls.c
 *		TLS to Redis (rediss://, rediss-cluster://, rediss-sentinel://):
 *		the TLS transport of redis_conn.c and the distkit.tls_* settings.
 *		The only file that knows OpenSSL.
 *
 * hiredis 0.14 has no TLS, but it need not: distkit owns the socket, the
 * waits and the timeouts (redis_conn.c), and uses hiredis for the TCP
 * connect and as the RESP formatter and parser only.  This transport lets
 * hiredis open the non-blocking TCP connection (redisConnectNonBlock), then
 * runs a non-blocking TLS handshake on its socket (SSL_connect), writes the
 * context's output buffer with SSL_write and feeds what SSL_read decrypts to
 * the context's reader.  Each step returns WANT_READ/WANT_WRITE to
 * redis_conn.c, which waits on the socket through its WaitEventSet: so the
 * handshake is bounded by distkit.connect_timeout (with the TCP connect and
 * AUTH) and cancellable like every other wait, and nothing here blocks.
 *
 * Settings (all superuser-only, reloadable): distkit.tls_ca_file (empty:
 * the system's trust store), distkit.tls_cert_file/tls_key_file (a client
 * certificate, for servers with tls-auth-clients yes), distkit.tls_verify
 * (full: chain and host name or IP; ca: chain only; none: nothing, with a
 * WARNING at each connect) and distkit.tls_server_name (SNI and the name
 * verified, for endpoints reached by IP).  Each process builds one SSL_CTX
 * from them at its first TLS connect and again after they change (their
 * assign hooks bump dk_target_generation, so every connection is opened
 * anew).  The key file is refused if group or others may read it, as libpq
 * does.
 *
 * Failures are described in the node's io_error, which redis_conn.c turns
 * into SQLSTATE 08001 "could not connect to Redis at host:port: ...": the
 * verification result for certificate problems (unknown CA, expired, host
 * mismatch), else OpenSSL's reason (e.g. the server's "certificate
 * required" alert).  A plaintext server on a TLS URL never answers the
 * ClientHello (Redis waits for a newline the handshake never sends): that
 * ends at connect_timeout with a hint naming the likely cause.
 *
 * Session resumption across reconnects is not done: a new connection makes
 * a full handshake.  Redis's post-handshake session tickets are read and
 * ignored (see TlsIdleBroken).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <poll.h>
#include <sys/stat.h>
#include <hiredis/hiredis.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "utils/guc.h"

#include "redis_int.h"

typedef enum TlsVerify
{
	TLS_VERIFY_FULL,
	TLS_VERIFY_CA,
	TLS_VERIFY_NONE
} TlsVerify;

static const struct config_enum_entry tls_verify_options[] = {
	{"full", TLS_VERIFY_FULL, false},
	{"ca", TLS_VERIFY_CA, false},
	{"none", TLS_VERIFY_NONE, false},
	{NULL, 0, false}
};

/* GUC variables */
static char *tls_ca_file = NULL;
static char *tls_cert_file = NULL;
static char *tls_key_file = NULL;
static char *tls_server_name = NULL;
static int	tls_verify = TLS_VERIFY_FULL;

/* This process's SSL_CTX and the settings generation it was built for. */
static SSL_CTX *tls_ctx = NULL;
static uint64 tls_settings_generation = 1;
static uint64 tls_ctx_generation = 0;

/* One TLS connection's state (n->tls, malloc'd). */
typedef struct TlsConn
{
	SSL		   *ssl;			/* NULL until TCP is connected */
	bool		cert_requested; /* the server asked for a client certificate we lack */
} TlsConn;

#define NEEDS_CLIENT_CERT "the server requires a client certificate (set distkit.tls_cert_file and distkit.tls_key_file)"

/*
 * OpenSSL asks this when the server requests a client certificate and none
 * is configured: remember it, so that the server's refusal, which arrives
 * after our side of the handshake is done (TLS 1.3) as an alert or just a
 * reset connection, is reported as what it is.
 */
static int
NoClientCert(SSL *ssl, X509 **x509, EVP_PKEY **pkey)
{
	TlsConn    *t = SSL_get_app_data(ssl);

	if (t)
		t->cert_requested = true;
	return 0;					/* no certificate */
}

/* Assign hook of every distkit.tls_* setting: new connections, new SSL_CTX. */
static void
AssignTlsSetting(const char *newval, void *extra)
{
	tls_settings_generation++;
	dk_target_generation++;
}

/* Assign hook of distkit.tls_verify. */
static void
AssignTlsVerify(int newval, void *extra)
{
	tls_settings_generation++;
	dk_target_generation++;
}

/* OpenSSL's reason for the last error of this thread's queue, or dflt. */
static const char *
OpenSslReason(const char *dflt)
{
	unsigned long e = ERR_peek_last_error();
	const char *r = e ? ERR_reason_error_string(e) : NULL;

	return r ? r : dflt;
}

/*
 * The key file may be read by its owner only (0600 or less), or, owned by
 * root, by its group too (0640), as libpq requires; false with why.
 */
static bool
KeyFilePrivate(const char *path, char *why, size_t whysize)
{
	struct stat st;

	if (stat(path, &st) != 0)
	{
		snprintf(why, whysize, "could not access distkit.tls_key_file \"%s\": %m", path);
		return false;
	}
	if (!S_ISREG(st.st_mode))
	{
		snprintf(why, whysize, "distkit.tls_key_file \"%s\" is not a regular file", path);
		return false;
	}
	if ((st.st_uid == geteuid() && (st.st_mode & (S_IRWXG | S_IRWXO)) != 0) ||
		(st.st_uid == 0 && (st.st_mode & (S_IWGRP | S_IXGRP | S_IRWXO)) != 0) ||
		(st.st_uid != geteuid() && st.st_uid != 0))
	{
		snprintf(why, whysize, "distkit.tls_key_file \"%s\" has group or world access, or another owner: "
				 "it must be owned by the database user with permissions u=rw (0600) or less, "
				 "or by root with u=rw,g=r (0640) or less", path);
		return false;
	}
	return true;
}

/* Build this process's SSL_CTX from the settings; NULL with why on failure. */
static SSL_CTX *
BuildContext(char *why, size_t whysize)
{
	SSL_CTX    *ctx;

	ERR_clear_error();
	ctx = SSL_CTX_new(TLS_client_method());
	if (ctx == NULL)
	{
		snprintf(why, whysize, "could not create a TLS context: %s", OpenSslReason("out of memory"));
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	if (tls_ca_file && tls_ca_file[0])
	{
		if (SSL_CTX_load_verify_locations(ctx, tls_ca_file, NULL) != 1)
		{
			snprintf(why, whysize, "could not load distkit.tls_ca_file \"%s\": %s",
					 tls_ca_file, OpenSslReason("unknown error"));
			goto fail;
		}
	}
	else if (SSL_CTX_set_default_verify_paths(ctx) != 1)
	{
		snprintf(why, whysize, "could not load the system's trusted certificates: %s",
				 OpenSslReason("unknown error"));
		goto fail;
	}
	SSL_CTX_set_verify(ctx, tls_verify == TLS_VERIFY_NONE ? SSL_VERIFY_NONE : SSL_VERIFY_PEER, NULL);
	SSL_CTX_set_client_cert_cb(ctx, NoClientCert);	/* only called without a certificate */
	if ((tls_cert_file && tls_cert_file[0]) != (tls_key_file && tls_key_file[0]))
	{
		snprintf(why, whysize, "distkit.tls_cert_file and distkit.tls_key_file must be set together");
		goto fail;
	}
	if (tls_cert_file && tls_cert_file[0])
	{
		if (SSL_CTX_use_certificate_chain_file(ctx, tls_cert_file) != 1)
		{
			snprintf(why, whysize, "could not load distkit.tls_cert_file \"%s\": %s",
					 tls_cert_file, OpenSslReason("unknown error"));
			goto fail;
		}
		if (!KeyFilePrivate(tls_key_file, why, whysize))
			goto fail;
		if (SSL_CTX_use_PrivateKey_file(ctx, tls_key_file, SSL_FILETYPE_PEM) != 1 ||
			SSL_CTX_check_private_key(ctx) != 1)
		{
			snprintf(why, whysize, "could not load distkit.tls_key_file \"%s\": %s",
					 tls_key_file, OpenSslReason("unknown error"));
			goto fail;
		}
	}
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

/*
 * The text of a failed TLS step: the certificate verification result if
 * that failed, else OpenSSL's reason (with what it means for the common
 * alerts), else errno or "the server closed the connection".
 */
static void
TlsFailure(DkNode *n, SSL *ssl, int rc, int sslerr, int saved_errno)
{
	char		buf[400];
	long		vr = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
	unsigned long e = ERR_peek_last_error();
	TlsConn    *t = ssl ? SSL_get_app_data(ssl) : NULL;

	if (t && t->cert_requested && !(sslerr == SSL_ERROR_SSL && vr != X509_V_OK))
		snprintf(buf, sizeof(buf), "TLS error: " NEEDS_CLIENT_CERT "; %s",
				 sslerr == SSL_ERROR_SSL && e != 0 ? OpenSslReason("unknown") :
				 sslerr == SSL_ERROR_SYSCALL && saved_errno != 0 && rc < 0 ? strerror(saved_errno) :
				 "the server closed the connection");
	else if (sslerr == SSL_ERROR_SSL && vr != X509_V_OK)
		snprintf(buf, sizeof(buf), "TLS certificate verification failed: %s",
				 X509_verify_cert_error_string(vr));
	else if (sslerr == SSL_ERROR_SSL && e != 0)
	{
		int			reason = ERR_GET_REASON(e);
		const char *what = NULL;

		if (reason == SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED)
			what = NEEDS_CLIENT_CERT;
		else if (reason == SSL_R_TLSV1_ALERT_UNKNOWN_CA || reason == SSL_R_SSLV3_ALERT_BAD_CERTIFICATE ||
				 reason == SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED)
			what = "the server rejected the client certificate";
		else if (reason == SSL_R_WRONG_VERSION_NUMBER || reason == SSL_R_PACKET_LENGTH_TOO_LONG)
			what = "the server does not speak TLS on this port";
		if (what)
			snprintf(buf, sizeof(buf), "TLS error: %s; %s", what, OpenSslReason("unknown"));
		else
			snprintf(buf, sizeof(buf), "TLS error: %s", OpenSslReason("unknown"));
	}
	else if (sslerr == SSL_ERROR_SYSCALL && saved_errno != 0 && rc < 0)
		snprintf(buf, sizeof(buf), "%s", strerror(saved_errno));
	else
		snprintf(buf, sizeof(buf), "Server closed the connection");
	ERR_clear_error();
	IoError(n, buf);
}

/* Open: check the settings (SSL_CTX), then start the TCP connect (hiredis). */
static DkIo
TlsOpen(DkNode *n)
{
	char		why[400];

	if (tls_ctx == NULL || tls_ctx_generation != tls_settings_generation)
	{
		SSL_CTX    *ctx = BuildContext(why, sizeof(why));

		if (ctx == NULL)
			return IoError(n, why);
		if (tls_ctx)
			SSL_CTX_free(tls_ctx);	/* connections still using it hold a reference */
		tls_ctx = ctx;
		tls_ctx_generation = tls_settings_generation;
	}
	if (tls_verify == TLS_VERIFY_NONE)
		ereport(WARNING,
				(errmsg("the TLS connection to Redis at %s is not verified", n->endpoint),
				 errdetail("distkit.tls_verify is none: anyone on the network path can impersonate Redis."),
				 errhint("Set distkit.tls_verify to full (or ca) and distkit.tls_ca_file to the CA of Redis's certificate.")));
	n->tls = calloc(1, sizeof(TlsConn));
	if (n->tls == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	return PlainOpen(n);
}

/* Set up the SSL object on the connected socket: SNI and what to verify. */
static DkIo
TlsStart(DkNode *n, TlsConn *t)
{
	const char *name = tls_server_name && tls_server_name[0] ? tls_server_name : n->host;
	unsigned char addr[16];
	bool		is_ip = inet_pton(AF_INET, name, addr) == 1 || inet_pton(AF_INET6, name, addr) == 1;

	ERR_clear_error();
	t->ssl = SSL_new(tls_ctx);
	if (t->ssl == NULL || SSL_set_fd(t->ssl, n->ctx->fd) != 1)
		return IoError(n, "could not create a TLS connection: out of memory");
	SSL_set_app_data(t->ssl, t);
	if (!is_ip && SSL_set_tlsext_host_name(t->ssl, name) != 1)
		return IoError(n, "the TLS server name is invalid");
	if (tls_verify == TLS_VERIFY_FULL)
	{
		int			ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), name)
			: SSL_set1_host(t->ssl, name);

		if (ok != 1)
			return IoError(n, "the TLS server name to verify is invalid");
	}
	return DK_IO_OK;
}

/* Handshake: the TCP connect's outcome, then SSL_connect until done. */
static DkIo
TlsHandshake(DkNode *n)
{
	TlsConn    *t = n->tls;
	int			rc;
	int			e;

	if (t->ssl == NULL)
	{
		DkIo		io = PlainHandshake(n);

		if (io != DK_IO_OK)
			return io;
		if ((io = TlsStart(n, t)) != DK_IO_OK)
			return io;
	}
	ERR_clear_error();
	errno = 0;
	rc = SSL_connect(t->ssl);
	if (rc == 1)
		return DK_IO_OK;
	e = SSL_get_error(t->ssl, rc);
	if (e == SSL_ERROR_WANT_READ)
		return DK_IO_WANT_READ;
	if (e == SSL_ERROR_WANT_WRITE)
		return DK_IO_WANT_WRITE;
	TlsFailure(n, t->ssl, rc, e, errno);
	return DK_IO_ERROR;
}

/* Write the context's output buffer (all of it, or WANT_*: call again). */
static DkIo
TlsWrite(DkNode *n)
{
	TlsConn    *t = n->tls;
	size_t		len = sdslen(n->ctx->obuf);
	int			rc;
	int			e;

	if (len == 0)
		return DK_IO_OK;
	ERR_clear_error();
	errno = 0;
	rc = SSL_write(t->ssl, n->ctx->obuf, (int) len);
	if (rc > 0)
	{
		/* without SSL_MODE_ENABLE_PARTIAL_WRITE, a success wrote it all */
		sdsclear(n->ctx->obuf);
		return DK_IO_OK;
	}
	e = SSL_get_error(t->ssl, rc);
	if (e == SSL_ERROR_WANT_WRITE)
		return DK_IO_WANT_WRITE;
	if (e == SSL_ERROR_WANT_READ)
		return DK_IO_WANT_READ;
	TlsFailure(n, t->ssl, rc, e, errno);
	return DK_IO_ERROR;
}

/*
 * Read what has arrived into the context's reader, until OpenSSL holds
 * nothing more (without read-ahead, what it has not read is in the socket,
 * which the caller then waits on): one SSL_read per reply in the common
 * case, no extra read that would only say EAGAIN.
 */
static DkIo
TlsRead(DkNode *n)
{
	TlsConn    *t = n->tls;
	char		buf[16 * 1024];

	for (;;)
	{
		int			rc;
		int			e;

		ERR_clear_error();
		errno = 0;
		rc = SSL_read(t->ssl, buf, sizeof(buf));
		if (rc > 0)
		{
			if (redisReaderFeed(n->ctx->reader, buf, rc) != REDIS_OK)
				return IoError(n, "out of memory in the reply parser");
			/* nothing left in OpenSSL: the rest, if any, is in the socket */
			if (!SSL_has_pending(t->ssl))
				return DK_IO_OK;
			continue;
		}
		e = SSL_get_error(t->ssl, rc);
		if (e == SSL_ERROR_WANT_READ)
			return DK_IO_OK;
		if (e == SSL_ERROR_WANT_WRITE)
			return DK_IO_WANT_WRITE;
		TlsFailure(n, t->ssl, rc, e, errno);
		return DK_IO_ERROR;
	}
}

/*
 * An idle connection is broken if the socket shows EOF, an error or
 * application data.  TLS 1.3 servers send session tickets after the
 * handshake: records that make the socket readable but hold no data, so a
 * readable socket is read (non-blocking) to tell them apart.
 */
static bool
TlsIdleBroken(DkNode *n)
{
	TlsConn    *t = n->tls;

	if (t == NULL || t->ssl == NULL)
		return true;
	/* a few rounds: a ticket may be followed by the server's EOF */
	for (int i = 0; i < 4; i++)
	{
		char		c;
		int			rc;
		int			e;

		if (!PlainIdleBroken(n))
			return false;		/* nothing (more) to read */
		ERR_clear_error();
		rc = SSL_read(t->ssl, &c, 1);
		e = rc > 0 ? SSL_ERROR_NONE : SSL_get_error(t->ssl, rc);
		ERR_clear_error();
		if (e != SSL_ERROR_WANT_READ)
			return true;		/* data nobody asked for, EOF or an error */
	}
	return true;
}

/* Decrypted bytes not yet read, without consuming them. */
static ssize_t
TlsPeek(DkNode *n, char *buf, size_t len)
{
	TlsConn    *t = n->tls;
	int			rc;

	if (t == NULL || t->ssl == NULL)
		return -1;
	ERR_clear_error();
	rc = SSL_peek(t->ssl, buf, (int) len);
	ERR_clear_error();
	return rc > 0 ? rc : -1;
}

/* Free the TLS state and the context (closes the socket). */
static void
TlsClose(DkNode *n)
{
	TlsConn    *t = n->tls;

	if (t)
	{
		if (t->ssl)
			SSL_free(t->ssl);
		free(t);
		n->tls = NULL;
	}
	if (n->ctx)
	{
		redisFree(n->ctx);
		n->ctx = NULL;
	}
	ERR_clear_error();
}

/* The socket (async-signal-safe: read by the idle timer's handler). */
static pgsocket
TlsSocket(const DkNode *n)
{
	return n->ctx ? n->ctx->fd : PGINVALID_SOCKET;
}

const DkTransport DkTlsTransport = {
	"TLS", TlsOpen, TlsHandshake, TlsWrite, TlsRead,
	TlsIdleBroken, TlsPeek, TlsClose, TlsSocket
};

/* Defines the distkit.tls_* settings. */
void
DkTlsInit(void)
{
	DefineCustomStringVariable("distkit.tls_ca_file",
							   "PEM file of the certificate authorities trusted for Redis's TLS certificate.",
							   "Empty: the system's default trust store.  Used by rediss:// URLs.",
							   &tls_ca_file, "", PGC_SIGHUP, GUC_SUPERUSER_ONLY,
							   NULL, AssignTlsSetting, NULL);
	DefineCustomStringVariable("distkit.tls_cert_file",
							   "PEM file of the client certificate presented to Redis (mutual TLS).",
							   "Set together with distkit.tls_key_file.",
							   &tls_cert_file, "", PGC_SIGHUP, GUC_SUPERUSER_ONLY,
							   NULL, AssignTlsSetting, NULL);
	DefineCustomStringVariable("distkit.tls_key_file",
							   "PEM file of the client certificate's private key (mutual TLS).",
							   "Must be readable by its owner only (0600), or by root and its group (0640).",
							   &tls_key_file, "", PGC_SIGHUP, GUC_SUPERUSER_ONLY,
							   NULL, AssignTlsSetting, NULL);
	DefineCustomStringVariable("distkit.tls_server_name",
							   "Name sent as SNI and verified against Redis's certificate.",
							   "Empty: the host of each node (an IP address is verified as one).",
							   &tls_server_name, "", PGC_SIGHUP, GUC_SUPERUSER_ONLY,
							   NULL, AssignTlsSetting, NULL);
	DefineCustomEnumVariable("distkit.tls_verify",
							 "How Redis's TLS certificate is verified: full, ca or none.",
							 "full: the chain and the host name or IP; ca: the chain only; "
							 "none: nothing (a WARNING at each connect).",
							 &tls_verify, TLS_VERIFY_FULL, tls_verify_options,
							 PGC_SIGHUP, GUC_SUPERUSER_ONLY,
							 NULL, AssignTlsVerify, NULL);
}
