"""URLs of the learner pages."""

from django.contrib.auth import views as auth_views
from django.urls import path

from web import views
from web.forms import SignInForm

urlpatterns = [
    path("", views.home, name="home"),
    path("signup/", views.signup, name="signup"),
    path(
        "login/",
        auth_views.LoginView.as_view(
            redirect_authenticated_user=True, authentication_form=SignInForm
        ),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("password/", views.PasswordChange.as_view(), name="password_change"),
    path(
        "password/done/", auth_views.PasswordChangeDoneView.as_view(), name="password_change_done"
    ),
    path("classrooms/", views.classrooms, name="classrooms"),
    path("accounts/<int:account_id>/", views.dashboard, name="dashboard"),
    path("accounts/<int:account_id>/live/", views.dashboard_live, name="dashboard-live"),
    path("accounts/<int:account_id>/trade/", views.trade, name="trade"),
    path("accounts/<int:account_id>/trade/preview/", views.trade_preview, name="trade-preview"),
    path("accounts/<int:account_id>/history/", views.history, name="history"),
    path("accounts/<int:account_id>/statement.csv", views.statement_csv, name="statement-csv"),
    path("accounts/<int:account_id>/positions.csv", views.positions_csv, name="positions-csv"),
    path("accounts/<int:account_id>/leaderboard/", views.leaderboard, name="leaderboard"),
    path("positions/<int:position_id>/", views.position_detail, name="position"),
    path("positions/<int:position_id>/live/", views.position_live, name="position-live"),
    path("positions/<int:position_id>/chart.json", views.position_chart, name="position-chart"),
    path("positions/<int:position_id>/margin/", views.position_margin, name="position-margin"),
    path("positions/<int:position_id>/close/", views.position_close, name="position-close"),
    path("positions/<int:position_id>/tpsl/", views.position_tpsl, name="position-tpsl"),
    path("orders/<int:order_id>/cancel/", views.order_cancel, name="order-cancel"),
    path("orders/<int:order_id>/change/", views.order_change, name="order-change"),
]
