output "project_id" {
  description = "PUBQ_PROJECT."
  value       = var.project_id
}

output "topics" {
  description = "Queue name => topic id."
  value       = { for k, q in module.queue : k => q.topic }
}

output "subscriptions" {
  description = "Queue name => worker subscription id."
  value       = { for k, q in module.queue : k => q.subscription }
}

output "dead_letter_topics" {
  description = "Queue name => dead-letter topic id."
  value       = { for k, q in module.queue : k => q.dead_letter_topic }
}

output "dead_letter_subscriptions" {
  description = "Queue name => dead-letter inspection subscription id."
  value       = { for k, q in module.queue : k => q.dead_letter_subscription }
}

output "sql_instance_connection_name" {
  description = "PUBQ_CLOUDSQL_INSTANCE (project:region:instance)."
  value       = google_sql_database_instance.pubq.connection_name
}

output "database_name" {
  description = "PUBQ_DATABASE_NAME."
  value       = google_sql_database.pubq.name
}

output "database_users" {
  description = "PUBQ_DATABASE_USER per binary (IAM database users)."
  value = {
    producer = module.producer.database_user
    worker   = module.worker.database_user
    pubqctl  = google_sql_user.pubqctl.name
  }
}

output "service_account_emails" {
  description = "Service account of each binary."
  value = {
    producer = module.producer.service_account_email
    worker   = module.worker.service_account_email
    pubqctl  = google_service_account.pubqctl.email
  }
}

output "service_urls" {
  description = "Cloud Run URLs (null until deploy_services is true)."
  value = {
    producer = module.producer.url
    worker   = module.worker.url
  }
}

output "api_tokens_secret" {
  description = "Secret Manager secret id holding PUBQ_API_TOKENS; add versions out of band."
  value       = google_secret_manager_secret.api_tokens.secret_id
}

output "pubsub_service_agent" {
  description = "The Pub/Sub service agent granted dead-letter permissions."
  value       = local.pubsub_service_agent
}
