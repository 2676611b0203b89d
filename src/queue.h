/*
 * queue.h — queues on Redis Streams (queue.c), fed by the transactional
 * outbox (outbox.c).
 */
#ifndef DISTKIT_QUEUE_H
#define DISTKIT_QUEUE_H

#include "fmgr.h"

extern void DkQueueInit(void);
extern void DkOutboxInit(void);
extern size_t DkQueueCheckName(text *queue);
extern char *DkQueueOrigin(void);
extern int	DkQueueMaxLength(void);
extern void DkQueueCheckPayloadLen(size_t len);
extern bool DkOutboxAttach(const char *dbname);
extern bool DkOutboxStopRequested(void);

#endif
