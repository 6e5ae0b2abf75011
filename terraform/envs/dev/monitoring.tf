# Example alerts per queue: the worker subscription's oldest unacked message is getting old (workers
# are behind or stuck), and messages are reaching the dead-letter topic.

resource "google_monitoring_alert_policy" "oldest_unacked" {
  for_each = local.queues

  project      = var.project_id
  display_name = "pubq ${var.environment} ${each.key}: oldest unacked message age"
  combiner     = "OR"
  user_labels  = local.labels

  conditions {
    display_name = "${each.value.subscription} oldest_unacked_message_age > ${lookup(var.alert_oldest_unacked_seconds_by_queue, each.key, var.alert_oldest_unacked_seconds)}s"

    condition_threshold {
      filter          = "resource.type = \"pubsub_subscription\" AND resource.labels.subscription_id = \"${module.queue[each.key].subscription}\" AND metric.type = \"pubsub.googleapis.com/subscription/oldest_unacked_message_age\""
      comparison      = "COMPARISON_GT"
      threshold_value = lookup(var.alert_oldest_unacked_seconds_by_queue, each.key, var.alert_oldest_unacked_seconds)
      duration        = "300s"

      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "Queue `${each.key}` is falling behind: see docs/gcp.md (scaling) and `pubqctl` for stuck jobs."
  }

  notification_channels = var.alert_notification_channels
}

resource "google_monitoring_alert_policy" "dead_letter" {
  for_each = local.queues

  project      = var.project_id
  display_name = "pubq ${var.environment} ${each.key}: messages dead-lettered"
  combiner     = "OR"
  user_labels  = local.labels

  conditions {
    display_name = "publishes to ${each.value.dead_letter_topic}"

    condition_threshold {
      filter          = "resource.type = \"pubsub_topic\" AND resource.labels.topic_id = \"${module.queue[each.key].dead_letter_topic}\" AND metric.type = \"pubsub.googleapis.com/topic/send_message_operation_count\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"

      aggregations {
        alignment_period   = "300s"
        per_series_aligner = "ALIGN_SUM"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "Jobs of queue `${each.key}` were dead-lettered. Inspect `${each.value.dead_letter_subscription}` with pubqctl."
  }

  notification_channels = var.alert_notification_channels
}
