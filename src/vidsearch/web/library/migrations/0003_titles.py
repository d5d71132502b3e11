from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('library', '0002_upload_check_and_attempts'),
    ]

    operations = [
        migrations.AddField(
            model_name='uploadjob',
            name='title',
            field=models.CharField(blank=True, help_text="the file's name on the uploader's machine: shown, never used as a path", max_length=200),
        ),
        migrations.AddField(
            model_name='videoclip',
            name='title',
            field=models.CharField(blank=True, help_text="what the pages call it: an upload's original file name (display only)", max_length=200),
        ),
    ]
