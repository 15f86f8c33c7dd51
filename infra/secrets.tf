# The HS256 signing secret for service callers' tokens. Terraform creates the secret, never its
# value (state files are not a place for secrets): add a version as docs/deploy.md shows.
resource "google_secret_manager_secret" "hs256" {
  secret_id = "${var.name}-hs256-secret"
  replication {
    auto {}
  }
}

# The built-in postgres user's password, used only by the migration step in Cloud Build.
resource "google_secret_manager_secret" "db_admin_password" {
  secret_id = "${var.name}-db-admin-password"
  replication {
    auto {}
  }
}
