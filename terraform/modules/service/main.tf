# A pubq binary on Cloud Run v2: its own service account, the project roles it needs, access to its
# secrets only, an IAM database user, and the service itself.

locals {
  member = "serviceAccount:${google_service_account.this.email}"
  # IAM database user names drop ".gserviceaccount.com": SA@PROJECT.iam.
  database_user = trimsuffix(google_service_account.this.email, ".gserviceaccount.com")

  env = merge(
    var.env,
    { OTEL_SERVICE_NAME = var.name },
    { for k, v in { PUBQ_DATABASE_USER = local.database_user } : k => v if var.sql_instance != null },
  )

  secrets = merge(
    { for k, s in var.secret_env : "env-${k}" => s.secret },
    { for k, s in var.secret_files : "file-${k}" => s.secret },
  )

  sql_roles = toset(var.sql_instance == null ? [] : ["roles/cloudsql.client", "roles/cloudsql.instanceUser"])
}

resource "google_service_account" "this" {
  project      = var.project
  account_id   = var.account_id
  display_name = "pubq ${var.name}"
}

resource "google_project_iam_member" "this" {
  for_each = var.project_roles

  project = var.project
  role    = each.value
  member  = local.member
}

resource "google_project_iam_member" "sql" {
  for_each = local.sql_roles

  project = var.project
  role    = each.value
  member  = local.member

  condition {
    title      = "pubq-${var.sql_instance}"
    expression = "resource.name == \"projects/${var.project}/instances/${var.sql_instance}\""
  }
}

resource "google_sql_user" "this" {
  count = var.sql_instance == null ? 0 : 1

  project  = var.project
  instance = var.sql_instance
  name     = local.database_user
  type     = "CLOUD_IAM_SERVICE_ACCOUNT"
}

resource "google_secret_manager_secret_iam_member" "this" {
  for_each = local.secrets

  project   = var.project
  secret_id = each.value
  role      = "roles/secretmanager.secretAccessor"
  member    = local.member
}

resource "google_cloud_run_v2_service" "this" {
  count = var.deploy ? 1 : 0

  project              = var.project
  location             = var.region
  name                 = var.name
  ingress              = var.ingress
  invoker_iam_disabled = var.invoker_iam_disabled
  deletion_protection  = var.deletion_protection
  labels               = var.labels

  template {
    service_account                  = google_service_account.this.email
    max_instance_request_concurrency = var.max_request_concurrency
    timeout                          = var.request_timeout
    labels                           = var.labels

    scaling {
      min_instance_count = var.min_instances
      max_instance_count = var.max_instances
    }

    # Direct VPC egress: private ranges (the Cloud SQL private IP) go through the VPC.
    vpc_access {
      egress = "PRIVATE_RANGES_ONLY"
      network_interfaces {
        network    = var.network
        subnetwork = var.subnetwork
      }
    }

    dynamic "volumes" {
      for_each = var.secret_files
      content {
        name = volumes.key
        secret {
          secret = volumes.value.secret
          items {
            version = volumes.value.version
            path    = volumes.value.file
          }
        }
      }
    }

    containers {
      image = var.image

      resources {
        limits = {
          cpu    = var.cpu
          memory = var.memory
        }
        cpu_idle          = var.cpu_idle
        startup_cpu_boost = true
      }

      dynamic "env" {
        for_each = local.env
        content {
          name  = env.key
          value = env.value
        }
      }

      dynamic "env" {
        for_each = var.secret_env
        content {
          name = env.key
          value_source {
            secret_key_ref {
              secret  = env.value.secret
              version = env.value.version
            }
          }
        }
      }

      dynamic "volume_mounts" {
        for_each = var.secret_files
        content {
          name       = volume_mounts.key
          mount_path = volume_mounts.value.dir
        }
      }

      dynamic "startup_probe" {
        for_each = var.health_path == null ? [] : [var.health_path]
        content {
          period_seconds    = 5
          failure_threshold = 24
          http_get {
            path = startup_probe.value
          }
        }
      }

      dynamic "liveness_probe" {
        for_each = var.health_path == null ? [] : [var.health_path]
        content {
          period_seconds = 30
          http_get {
            path = liveness_probe.value
          }
        }
      }
    }
  }

  # The revision must start with its permissions in place.
  depends_on = [
    google_project_iam_member.this,
    google_project_iam_member.sql,
    google_secret_manager_secret_iam_member.this,
    google_sql_user.this,
  ]

  lifecycle {
    precondition {
      condition     = var.image != null
      error_message = "image is required when deploy is true."
    }
  }
}

resource "google_cloud_run_v2_service_iam_member" "invoker" {
  for_each = var.deploy ? var.invokers : {}

  project  = var.project
  location = var.region
  name     = google_cloud_run_v2_service.this[0].name
  role     = "roles/run.invoker"
  member   = each.value
}
