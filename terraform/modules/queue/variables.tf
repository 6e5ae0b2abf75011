variable "project" {
  description = "GCP project id that owns the topics and subscriptions."
  type        = string
}

variable "name" {
  description = "Queue name (the key under `queues:` in queues.yaml); used in labels."
  type        = string
}

variable "topic" {
  description = "Queue topic id (queues.yaml `topic`)."
  type        = string
}

variable "subscription" {
  description = "Worker subscription id on the queue topic (queues.yaml `subscription`)."
  type        = string
}

variable "dead_letter_topic" {
  description = "Dead-letter topic id (queues.yaml `dead_letter_topic`)."
  type        = string
}

variable "dead_letter_subscription" {
  description = "Inspection subscription id on the dead-letter topic (queues.yaml `dead_letter_subscription`)."
  type        = string
}

variable "ack_deadline" {
  description = "Worker subscription ack deadline as a Go duration (queues.yaml `ack_deadline`, 10s..600s)."
  type        = string

  validation {
    condition     = can(regex("^([0-9]*\\.?[0-9]+(h|ms|us|µs|ns|m|s))+$", var.ack_deadline))
    error_message = "ack_deadline must be a Go duration such as 60s."
  }
}

variable "message_retention" {
  description = "How long Pub/Sub keeps unacked messages, as a Go duration (queues.yaml `message_retention`, 10m..744h)."
  type        = string

  validation {
    condition     = can(regex("^([0-9]*\\.?[0-9]+(h|ms|us|µs|ns|m|s))+$", var.message_retention))
    error_message = "message_retention must be a Go duration such as 168h."
  }
}

variable "max_delivery_attempts" {
  description = "Dead-letter policy backstop: deliveries before Pub/Sub forwards a message to the dead-letter topic (5..100)."
  type        = number

  validation {
    condition     = var.max_delivery_attempts >= 5 && var.max_delivery_attempts <= 100
    error_message = "max_delivery_attempts must be between 5 and 100 (Pub/Sub limit)."
  }
}

variable "exactly_once" {
  description = "Enable Pub/Sub exactly-once delivery on the worker subscription (queues.yaml `exactly_once`)."
  type        = bool
  default     = false
}

variable "retry_minimum_backoff" {
  description = "Go duration for the subscription retry policy minimum backoff (queues.yaml `backoff.initial`; capped at 600s)."
  type        = string

  validation {
    condition     = can(regex("^([0-9]*\\.?[0-9]+(h|ms|us|µs|ns|m|s))+$", var.retry_minimum_backoff))
    error_message = "retry_minimum_backoff must be a Go duration such as 1s."
  }
}

variable "retry_maximum_backoff" {
  description = "Go duration for the subscription retry policy maximum backoff (queues.yaml `backoff.max`; capped at 600s)."
  type        = string

  validation {
    condition     = can(regex("^([0-9]*\\.?[0-9]+(h|ms|us|µs|ns|m|s))+$", var.retry_maximum_backoff))
    error_message = "retry_maximum_backoff must be a Go duration such as 10m."
  }
}

variable "dead_letter_retention" {
  description = "Go duration the inspection subscription keeps dead-lettered messages (10m..168h)."
  type        = string
  default     = "168h"
}

variable "labels" {
  description = "Labels added to every topic and subscription."
  type        = map(string)
  default     = {}
}

# IAM: maps keyed by a static name (e.g. "producer") so for_each keys are known at plan time
# even when the member's email is not.

variable "topic_publishers" {
  description = "Members granted roles/pubsub.publisher on the queue topic (producer, worker for retries and the outbox relay)."
  type        = map(string)
  default     = {}
}

variable "dead_letter_publishers" {
  description = "Members granted roles/pubsub.publisher on the dead-letter topic (the worker dead-letters jobs itself)."
  type        = map(string)
  default     = {}
}

variable "subscription_subscribers" {
  description = "Members granted roles/pubsub.subscriber on the worker subscription."
  type        = map(string)
  default     = {}
}

variable "dead_letter_subscription_subscribers" {
  description = "Members granted roles/pubsub.subscriber on the dead-letter inspection subscription (pubqctl)."
  type        = map(string)
  default     = {}
}

variable "pubsub_service_agent" {
  description = "Email of the Pub/Sub service agent (service-PROJECT_NUMBER@gcp-sa-pubsub.iam.gserviceaccount.com): publisher on the dead-letter topic and subscriber on the worker subscription, as dead-lettering requires."
  type        = string
}
