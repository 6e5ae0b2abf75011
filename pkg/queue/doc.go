// Package queue parses and validates pubq's queue configuration (queues.yaml): each queue's Pub/Sub
// resources, delivery and flow-control settings, retry backoff, the job kinds routed to it, and the cron
// schedules the producer fires. The same file drives the bootstrap, the worker, the producer's routing and
// Terraform, so every error names the queue (or schedule) and the field at fault.
package queue
