# One pubq queue: topic, worker subscription with retry and dead-letter policies, dead-letter topic and
# its inspection subscription, and the IAM members on exactly these resources.

locals {
  # Go duration strings ("500ms", "1m30s", "168h") to nanoseconds, then to the provider's "Ns" format.
  unit_ns     = { h = 3600000000000, m = 60000000000, s = 1000000000, ms = 1000000, us = 1000, "µs" = 1000, ns = 1 }
  duration_re = "([0-9]*\\.?[0-9]+)(h|ms|us|µs|ns|m|s)"

  go_durations = {
    ack_deadline          = var.ack_deadline
    message_retention     = var.message_retention
    dead_letter_retention = var.dead_letter_retention
    minimum_backoff       = var.retry_minimum_backoff
    maximum_backoff       = var.retry_maximum_backoff
  }
  nanos = {
    for k, d in local.go_durations :
    k => sum(concat([0], [for p in regexall(local.duration_re, d) : tonumber(p[0]) * local.unit_ns[p[1]]]))
  }
  seconds = { for k, ns in local.nanos : k => ns / 1000000000 }

  # Pub/Sub caps both retry-policy backoffs at 600s; pubq's own backoff schedule (republish) may be longer.
  backoff_seconds = {
    minimum_backoff = min(local.seconds.minimum_backoff, 600)
    maximum_backoff = min(local.seconds.maximum_backoff, 600)
  }
  # Whole seconds as "30s", otherwise the API's canonical millisecond form ("0.500s").
  provider_duration = {
    for k, s in merge(local.seconds, local.backoff_seconds) :
    k => floor(s) == s ? format("%ds", s) : format("%.3fs", s)
  }

  labels = merge(var.labels, { pubq_queue = var.name })

  dead_letter_publishers = merge(var.dead_letter_publishers, {
    pubsub-service-agent = "serviceAccount:${var.pubsub_service_agent}"
  })
  subscription_subscribers = merge(var.subscription_subscribers, {
    pubsub-service-agent = "serviceAccount:${var.pubsub_service_agent}"
  })
}

resource "google_pubsub_topic" "queue" {
  project = var.project
  name    = var.topic
  labels  = local.labels
}

resource "google_pubsub_topic" "dead_letter" {
  project = var.project
  name    = var.dead_letter_topic
  labels  = local.labels
}

resource "google_pubsub_subscription" "worker" {
  project = var.project
  name    = var.subscription
  topic   = google_pubsub_topic.queue.id
  labels  = local.labels

  ack_deadline_seconds         = local.seconds.ack_deadline
  message_retention_duration   = local.provider_duration.message_retention
  enable_exactly_once_delivery = var.exactly_once

  # An empty ttl means the subscription never expires, however long the workers are idle.
  expiration_policy {
    ttl = ""
  }

  retry_policy {
    minimum_backoff = local.provider_duration.minimum_backoff
    maximum_backoff = local.provider_duration.maximum_backoff
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }

  lifecycle {
    precondition {
      condition     = local.seconds.ack_deadline >= 10 && local.seconds.ack_deadline <= 600
      error_message = "ack_deadline must be between 10s and 600s (Pub/Sub limit)."
    }
    precondition {
      condition     = local.seconds.message_retention >= 600 && local.seconds.message_retention <= 2678400
      error_message = "message_retention must be between 10m and 744h (Pub/Sub limit)."
    }
  }
}

resource "google_pubsub_subscription" "dead_letter_inspect" {
  project = var.project
  name    = var.dead_letter_subscription
  topic   = google_pubsub_topic.dead_letter.id
  labels  = local.labels

  ack_deadline_seconds       = 60
  message_retention_duration = local.provider_duration.dead_letter_retention

  expiration_policy {
    ttl = ""
  }
}

resource "google_pubsub_topic_iam_member" "publisher" {
  for_each = var.topic_publishers

  project = var.project
  topic   = google_pubsub_topic.queue.name
  role    = "roles/pubsub.publisher"
  member  = each.value
}

resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  for_each = local.dead_letter_publishers

  project = var.project
  topic   = google_pubsub_topic.dead_letter.name
  role    = "roles/pubsub.publisher"
  member  = each.value
}

resource "google_pubsub_subscription_iam_member" "subscriber" {
  for_each = local.subscription_subscribers

  project      = var.project
  subscription = google_pubsub_subscription.worker.name
  role         = "roles/pubsub.subscriber"
  member       = each.value
}

resource "google_pubsub_subscription_iam_member" "dead_letter_subscriber" {
  for_each = var.dead_letter_subscription_subscribers

  project      = var.project
  subscription = google_pubsub_subscription.dead_letter_inspect.name
  role         = "roles/pubsub.subscriber"
  member       = each.value
}
