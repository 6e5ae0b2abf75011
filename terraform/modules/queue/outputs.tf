output "topic" {
  description = "Queue topic id (what the producer and the relay publish to)."
  value       = google_pubsub_topic.queue.name
}

output "topic_id" {
  description = "Queue topic resource name, projects/P/topics/T."
  value       = google_pubsub_topic.queue.id
}

output "subscription" {
  description = "Worker subscription id."
  value       = google_pubsub_subscription.worker.name
}

output "dead_letter_topic" {
  description = "Dead-letter topic id."
  value       = google_pubsub_topic.dead_letter.name
}

output "dead_letter_subscription" {
  description = "Dead-letter inspection subscription id (read by pubqctl)."
  value       = google_pubsub_subscription.dead_letter_inspect.name
}
