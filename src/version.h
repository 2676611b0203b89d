/*
 * version.h — the versions of distkit's SQL objects this library works with.
 */
#ifndef DISTKIT_VERSION_H
#define DISTKIT_VERSION_H

extern bool DkSqlVersionOk;
extern void DkCheckSqlVersionSlow(void);
extern const char *DkSqlVersionNewest(void);

/* First thing in every SQL-callable function: refuse unknown SQL objects. */
#define DkCheckSqlVersion() \
	do { \
		if (unlikely(!DkSqlVersionOk)) \
			DkCheckSqlVersionSlow(); \
	} while (0)

#endif
